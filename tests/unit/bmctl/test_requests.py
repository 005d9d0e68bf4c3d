"""bmctl without a server: argument parsing, request building (through a
recording fake client), table/JSON rendering and error reporting."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from bmaas.v1 import common_pb2, operator_pb2, tenant_pb2
from bmctl import main as cli
from bmctl.client import CliError, describe_rpc_error
from bmctl.output import field, table, to_json


class FakeClient:
    """Records calls and answers from a canned table."""

    def __init__(self, replies: dict[str, list[Message]]) -> None:
        self.replies = replies
        self.calls: list[tuple[str, str, Message]] = []

    def call(self, service: str, method: str, request: Message) -> Message:
        self.calls.append((service, method, request))
        return self.replies[method].pop(0)


def run(argv: list[str], client: FakeClient) -> object:
    args = cli.build_parser().parse_args(["--endpoint", "x:1", *argv])
    return args.func(client, args)


def test_host_enroll_builds_the_request_and_notes_the_secret() -> None:
    resp = operator_pb2.EnrollHostResponse(
        host=common_pb2.Host(name="hosts/h1", state=common_pb2.HOST_STATE_ENROLLED),
        agent_credential="h1.secret",
    )
    fake = FakeClient({"EnrollHost": [resp]})
    result = run(
        [
            "host",
            "enroll",
            "--id",
            "h1",
            "--zone",
            "z1",
            "--rack",
            "r1",
            "--host-class",
            "c64",
            "--cpus",
            "64",
            "--memory-gib",
            "256",
            "--disk-gib",
            "1920",
            "--disk-gib",
            "960",
        ],
        fake,
    )
    ((service, method, req),) = fake.calls
    assert (service, method) == ("operator", "EnrollHost")
    assert isinstance(req, operator_pb2.EnrollHostRequest)
    assert req.host.name == "hosts/h1" and req.request_id
    assert [d.size_gib for d in req.host.hardware.disks] == [1920, 960]
    text = cli.render(result, "table")  # type: ignore[arg-type]
    assert "h1.secret" in text and "ENROLLED" in text
    assert result.notes  # type: ignore[attr-defined]


def test_list_follows_pages_until_limit() -> None:
    pages = [
        tenant_pb2.ListInstancesResponse(
            instances=[common_pb2.Instance(name=f"tenants/t/instances/i{i}")], next_page_token="n"
        )
        for i in range(5)
    ]
    fake = FakeClient({"ListInstances": pages})
    result = run(["instance", "list", "--limit", "3", "--filter", "state=RUNNING"], fake)
    assert len(fake.calls) == 3
    assert all(c[2].filter == "state=RUNNING" for c in fake.calls)  # type: ignore[attr-defined]
    assert [c[2].page_token for c in fake.calls] == ["", "n", "n"]  # type: ignore[attr-defined]
    out = json.loads(cli.render(result, "json"))  # type: ignore[arg-type]
    assert [i["name"] for i in out] == [f"tenants/t/instances/i{i}" for i in range(3)]


def test_instance_create_qualifies_short_names_and_reads_files(tmp_path: Path) -> None:
    ud = tmp_path / "ud.yaml"
    ud.write_text("#cloud-config\n")
    key = tmp_path / "id.pub"
    key.write_text("ssh-ed25519 AAAA me@x\n")
    fake = FakeClient({"CreateInstance": [common_pb2.Instance(name="tenants/t/instances/i1")]})
    run(
        [
            "instance",
            "create",
            "--type",
            "bm-c64",
            "--image",
            "debian-12",
            "--user-data-file",
            str(ud),
            "--ssh-key-file",
            str(key),
            "--request-id",
            "r-1",
        ],
        fake,
    )
    req = fake.calls[0][2]
    assert isinstance(req, tenant_pb2.CreateInstanceRequest)
    assert req.instance.instance_type == "instanceTypes/bm-c64"
    assert req.instance.image == "images/debian-12"
    assert req.instance.user_data == "#cloud-config\n"
    assert list(req.instance.ssh_keys) == ["ssh-ed25519 AAAA me@x"]
    assert req.request_id == "r-1"
    with pytest.raises(CliError) as exc:
        run(
            [
                "instance",
                "create",
                "--type",
                "t",
                "--image",
                "i",
                "--user-data-file",
                str(tmp_path / "missing"),
            ],
            fake,
        )
    assert exc.value.exit_code == 2 and "--user-data-file" in str(exc.value)


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
    assert json.loads(to_json(rows[0]))["state"] == "INSTANCE_STATE_RUNNING"


class FakeRpcError(grpc.RpcError, grpc.Call):  # type: ignore[misc]
    def __init__(self, status: status_pb2.Status) -> None:
        self._status = rpc_status.to_status(status)

    def code(self) -> grpc.StatusCode:
        return self._status.code

    def details(self) -> str:
        return str(self._status.details)

    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        return tuple(self._status.trailing_metadata)

    def initial_metadata(self) -> tuple[()]:
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> None:
        return None

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: object) -> None:
        return None


def test_rpc_errors_name_code_message_and_fields() -> None:
    status = status_pb2.Status(
        code=code_pb2.INVALID_ARGUMENT, message="volume.size_gib: 0 out of range"
    )
    bad = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field="volume.size_gib", description="0")
        ]
    )
    status.details.add().Pack(bad)
    text = describe_rpc_error(FakeRpcError(status))
    assert text.startswith("INVALID_ARGUMENT: volume.size_gib: 0 out of range")
    assert "field volume.size_gib" in text


def test_main_reports_missing_endpoint_and_usage(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BMAAS_ENDPOINT", raising=False)
    assert cli.main(["host", "list"]) == 2
    assert "no endpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["host", "fly"])
    assert exc.value.code == 2
    monkeypatch.setenv("BMAAS_ENDPOINT", "127.0.0.1:9")
    monkeypatch.setenv("BMAAS_TOKEN", "tok")
    args = cli.build_parser().parse_args(["host", "list"])
    assert args.endpoint == "127.0.0.1:9" and args.token == "tok"
