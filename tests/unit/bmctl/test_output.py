"""Rendering: aligned tables with short enum names; JSON and YAML in the proto
JSON mapping, which parse back to the same data."""

from __future__ import annotations

import json

import yaml

from bmaas.v1 import common_pb2
from bmctl import main as cli
from bmctl.columns import INSTANCE_COLUMNS
from bmctl.commands import Result
from bmctl.output import field, table, to_json, to_yaml


def test_table_shows_short_enum_names_and_aligns() -> None:
    rows = [
        common_pb2.Instance(name="a", state=common_pb2.INSTANCE_STATE_RUNNING),
        common_pb2.Instance(name="longer-name", state=common_pb2.INSTANCE_STATE_STOPPED),
    ]
    text = table(rows, [("NAME", field("name")), ("STATE", field("state"))])
    lines = text.splitlines()
    assert lines[0].split() == ["NAME", "STATE"]
    assert lines[1].split() == ["a", "RUNNING"] and lines[2].split() == ["longer-name", "STOPPED"]
    assert lines[1].index("RUNNING") == lines[2].index("STOPPED")
    assert field("state")(common_pb2.Host(state=common_pb2.HOST_STATE_MAINTENANCE)) == "MAINTENANCE"


def test_json_and_yaml_agree_and_use_the_proto_json_mapping() -> None:
    vol = common_pb2.Volume(
        name="tenants/t/volumes/v: 1", size_gib=20, state=common_pb2.VOLUME_STATE_IN_USE
    )
    as_json = json.loads(to_json(vol))
    assert as_json == yaml.safe_load(to_yaml(vol))
    assert as_json["state"] == "VOLUME_STATE_IN_USE" and as_json["size_gib"] == "20"
    assert yaml.safe_load(to_yaml([vol, vol])) == [as_json, as_json]
    odd = common_pb2.Instance(name="x", user_data="a: b\n- c\n'\"\u00e9\x01", ssh_keys=["#k"])
    assert yaml.safe_load(to_yaml(odd))["user_data"] == odd.user_data


def test_render_chooses_object_list_or_nothing() -> None:
    inst = common_pb2.Instance(name="tenants/t/instances/i")
    one = Result([inst], INSTANCE_COLUMNS, single=True)
    many = Result([inst, inst], INSTANCE_COLUMNS)
    assert json.loads(cli.render(one, "json"))["name"] == inst.name
    assert len(json.loads(cli.render(many, "json"))) == 2
    assert yaml.safe_load(cli.render(Result([], INSTANCE_COLUMNS), "yaml")) == []
    assert cli.render(Result([], notes=["deleted x"]), "json") == ""
    text = Result([], text="console text", data={"output": "x"})
    assert cli.render(text, "table") == "console text"
    assert yaml.safe_load(cli.render(text, "yaml")) == {"output": "x"}
    script = Result([], text="complete -F _bmctl bmctl", plain=True)
    assert cli.render(script, "json") == "complete -F _bmctl bmctl"
