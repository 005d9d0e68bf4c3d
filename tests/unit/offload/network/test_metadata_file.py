"""load_metadata: the --metadata file read strictly (unknown keys, wrong types, one line)."""

from __future__ import annotations

import json
import tempfile
from ipaddress import IPv4Interface
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from offload.network.errors import InvalidMetadataFile
from offload.network.metadata import InstanceMetadata
from offload.network.metadata_file import load_metadata

MAC = "52:54:00:00:00:07"
IP = IPv4Interface("10.0.0.7/24")


def load(tmp_path: Path, content: str) -> InstanceMetadata:
    path = tmp_path / "m.json"
    path.write_text(content)
    return load_metadata(path, mac=MAC, ip=IP)


def test_full_and_empty(tmp_path: Path) -> None:
    md = load(
        tmp_path,
        json.dumps(
            {"instance_id": "i-9", "hostname": "web", "public_keys": ["k1"], "user_data": "ü"}
        ),
    )
    assert md == load_metadata(tmp_path / "m.json", mac=MAC, ip=IP)
    assert (md.instance_id, md.hostname, md.public_keys) == ("i-9", "web", ("k1",))
    assert md.user_data == "ü".encode() and md.local_ipv4 == "10.0.0.7"
    empty = load(tmp_path, "{}")
    assert empty.instance_id == "i-525400000007" == empty.hostname
    assert empty.user_data is None and empty.public_keys == ()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"instance-id": "i-1"}', "unknown key 'instance-id' (known: instance_id, hostname"),
        ('{"instance_id": "i-1", "zone": "a"}', "unknown key 'zone'"),
        ('{"instance_id": 7}', "instance_id must be a string, not int"),
        ('{"hostname": null}', "hostname must be a string, not NoneType"),
        ('{"user_data": true}', "user_data must be a string, not bool"),
        ('{"public_keys": "ssh-ed25519 A"}', "public_keys must be a list of strings, not str"),
        ('{"public_keys": ["a", 1]}', "public_keys must be a list of strings, not list"),
        ('["instance_id"]', "not a JSON object"),
        ("{", "not JSON"),
        ("\udcff", "not JSON"),
    ],
)
def test_refused_in_one_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "m.json"
    path.write_bytes(content.encode(errors="surrogateescape"))
    with pytest.raises(InvalidMetadataFile) as info:
        load_metadata(path, mac=MAC, ip=IP)
    text = str(info.value)
    assert message in text and "\n" not in text and text.startswith(f"metadata {path}: ")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidMetadataFile, match="No such file"):
        load_metadata(tmp_path / "nope.json", mac=MAC, ip=IP)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)


@given(
    st.dictionaries(
        st.sampled_from(["instance_id", "hostname", "public_keys", "user_data", "x"]), _JSON
    )
)
def test_any_object_loads_or_is_refused_in_one_line(raw: dict[str, object]) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.json"
        path.write_text(json.dumps(raw))
        try:
            md = load_metadata(path, mac=MAC, ip=IP)
        except InvalidMetadataFile as exc:
            assert "\n" not in str(exc)
        else:
            assert "x" not in raw
            assert md.instance_id == raw.get("instance_id", "i-525400000007")
