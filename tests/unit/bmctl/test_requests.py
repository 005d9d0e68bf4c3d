"""bmctl without a server: argument parsing and request building (through a
recording fake client)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from google.protobuf.message import Message

from bmaas.v1 import common_pb2, operator_pb2, tenant_pb2
from bmctl import main as cli
from bmctl.client import CliError


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
            "--power-driver",
            "qemu",
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
    assert req.host.power_driver == "qemu"
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
            "--instance-type",
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


def test_host_enroll_requires_an_explicit_power_driver(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["host", "enroll", "--zone", "z", "--rack", "r", "--host-class", "c"]
    code = cli.main([*argv, "--cpus", "1", "--memory-gib", "1"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "required: --power-driver" in err
    code = cli.main([*argv, "--cpus", "1", "--memory-gib", "1", "--power-driver", "ipmi"])
    assert code == 2 and "invalid choice: 'ipmi'" in capsys.readouterr().err


def test_quota_set_keeps_the_limit_not_given() -> None:
    current = common_pb2.Tenant(
        name="tenants/t", quota=common_pb2.Quota(max_instances=3, max_volume_gib=100), etag="e1"
    )
    fake = FakeClient({"GetTenant": [current], "SetTenantQuota": [current]})
    run(["quota", "set", "t", "--max-instances", "7"], fake)
    (_, get, _), (_, method, req) = fake.calls
    assert get == "GetTenant" and method == "SetTenantQuota"
    assert isinstance(req, operator_pb2.SetTenantQuotaRequest)
    assert (req.tenant, req.etag) == ("tenants/t", "e1")
    assert (req.quota.max_instances, req.quota.max_volume_gib) == (7, 100)
    fake = FakeClient({"SetTenantQuota": [current]})
    run(["quota", "set", "tenants/t", "--max-instances", "1", "--max-volume-gib", "2"], fake)
    ((_, _, req),) = fake.calls  # both given: no read, no etag
    assert isinstance(req, operator_pb2.SetTenantQuotaRequest) and not req.etag


@pytest.mark.parametrize(
    ("ttl", "seconds"), [("3600", 3600), ("90m", 5400), ("12h", 43200), ("30d", 2592000)]
)
def test_token_issue_ttl_durations(ttl: str, seconds: int) -> None:
    resp = operator_pb2.IssueTenantTokenResponse(tenant="tenants/acme", token="bmt_x.y")
    fake = FakeClient({"IssueTenantToken": [resp]})
    run(["token", "issue", "acme", "--ttl", ttl], fake)
    ((_, _, req),) = fake.calls
    assert isinstance(req, operator_pb2.IssueTenantTokenRequest)
    assert req.tenant == "tenants/acme" and req.ttl_seconds == seconds


@pytest.mark.parametrize("ttl", ["0", "soon", "5w", "d", "1.5h", ""])
def test_token_issue_refuses_a_bad_ttl(ttl: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        run(["token", "issue", "acme", "--ttl", ttl], FakeClient({}))
    assert exc.value.code == 2 and "expected a duration" in capsys.readouterr().err


def test_token_list_and_revoke_show_times_never_secrets() -> None:
    info = operator_pb2.TenantTokenInfo(tenant="tenants/acme", token_id="abc123")
    info.create_time.FromSeconds(1_700_000_000)
    info.expire_time.FromSeconds(1_700_000_000 + 86400)
    fake = FakeClient(
        {
            "ListTenantTokens": [operator_pb2.ListTenantTokensResponse(tokens=[info])],
            "RevokeTenantToken": [info],
        }
    )
    table = cli.render(run(["token", "list", "acme"], fake), "table")  # type: ignore[arg-type]
    header, row = table.splitlines()[:2]
    assert header.split() == [
        "TENANT",
        "TOKEN",
        "ID",
        "CREATED",
        "EXPIRES",
        "LAST",
        "USED",
        "REVOKED",
    ]
    assert row.split() == ["tenants/acme", "abc123", "2023-11-14T22:13:20Z", "2023-11-15T22:13:20Z"]
    run(["token", "revoke", "tenants/acme", "abc123"], fake)
    revoke = fake.calls[-1][2]
    assert isinstance(revoke, operator_pb2.RevokeTenantTokenRequest)
    assert (revoke.tenant, revoke.token_id) == ("tenants/acme", "abc123")


@pytest.mark.parametrize(
    ("flag", "mode"),
    [
        ([], common_pb2.METADATA_TOKENS_REQUIRED),
        (["--metadata-tokens", "required"], common_pb2.METADATA_TOKENS_REQUIRED),
        (["--metadata-tokens", "optional"], common_pb2.METADATA_TOKENS_OPTIONAL),
    ],
)
def test_instance_create_metadata_tokens(
    flag: list[str], mode: common_pb2.MetadataTokens.ValueType
) -> None:
    fake = FakeClient({"CreateInstance": [common_pb2.Instance(name="tenants/t/instances/i1")]})
    run(["instance", "create", "--type", "t", "--image", "i", *flag], fake)
    req = fake.calls[0][2]
    assert isinstance(req, tenant_pb2.CreateInstanceRequest)
    assert req.instance.metadata_tokens == mode


def test_instance_create_refuses_an_unknown_metadata_tokens_mode(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exc:
        run(
            ["instance", "create", "--type", "t", "--image", "i", "--metadata-tokens", "v1"],
            FakeClient({}),
        )
    assert exc.value.code == 2 and "--metadata-tokens" in capsys.readouterr().err
