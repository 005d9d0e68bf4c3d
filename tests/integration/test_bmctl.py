"""bmctl against a real control plane (subprocess) on a real etcd: operator
and tenant flows, table and JSON output, and error paths that exit non-zero
with the gRPC code and a message naming the problem."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import grpc
import pytest

from bmaas.v1 import agent_pb2, agent_pb2_grpc
from bmctl import main as cli
from tools.region.control_plane import OPERATOR_TOKEN, ControlPlaneProcess
from tools.region.etcd import EtcdServer
from tools.region.paths import ROOT


@pytest.fixture
def endpoint(etcd: EtcdServer) -> Iterator[str]:
    with ControlPlaneProcess(etcd, controllers=False) as cp:
        yield f"127.0.0.1:{cp.port}"


def register_agent(endpoint: str, host: str, credential: str) -> None:
    """What the host agent does on boot: makes an ENROLLED host AVAILABLE."""
    with grpc.insecure_channel(endpoint) as channel:
        agent_pb2_grpc.AgentServiceStub(channel).Register(
            agent_pb2.RegisterRequest(host=host),
            metadata=(("authorization", f"Bearer {credential}"),),
            timeout=10,
        )


def bmctl(
    capsys: pytest.CaptureFixture[str], endpoint: str, token: str, *args: str
) -> tuple[int, str, str]:
    code = cli.main(["--endpoint", endpoint, "--token", token, *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_operator_and_tenant_flows(capsys: pytest.CaptureFixture[str], endpoint: str) -> None:
    op = OPERATOR_TOKEN
    ok = lambda *a: bmctl(capsys, endpoint, op, *a)  # noqa: E731
    code, out, _ = ok(
        "instance-type",
        "create",
        "bm-c64",
        "--host-class",
        "c64",
        "--cpus",
        "64",
        "--memory-gib",
        "256",
    )
    assert code == 0 and "instanceTypes/bm-c64" in out
    code, out, _ = ok("image", "register", "debian-12", "--source-uri", "file:///d12.raw")
    assert code == 0 and "images/debian-12" in out
    for i in range(2):
        code, out, err = ok(
            "-o",
            "json",
            "host",
            "enroll",
            "--id",
            f"h{i}",
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
        )
        assert code == 0 and "shown once" in err
        cred = json.loads(out)["agent_credential"]
        assert cred.startswith(f"h{i}.")
        register_agent(endpoint, f"hosts/h{i}", cred)
    code, out, _ = ok("host", "list")
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["NAME", "STATE", "ZONE"] and len(lines) == 3
    code, out, _ = ok("host", "cordon", "hosts/h1")
    assert code == 0
    code, out, _ = ok("-o", "json", "host", "get", "hosts/h1")
    assert json.loads(out)["cordoned"] is True
    code, out, _ = ok("host", "uncordon", "hosts/h1")
    code, out, _ = ok("host", "maintenance", "hosts/h1", "on", "--reason", "bios")
    assert code == 0 and "MAINTENANCE" in out
    code, out, _ = ok("host", "decommission", "hosts/h1")
    assert code == 0 and "DECOMMISSIONED" in out
    code, out, _ = ok("tenant", "create", "--id", "acme", "--max-instances", "3")
    assert code == 0 and "tenants/acme" in out
    code, out, _ = ok("-o", "json", "tenant", "token", "tenants/acme")
    token = json.loads(out)["token"]

    t = lambda *a: bmctl(capsys, endpoint, token, *a)  # noqa: E731
    code, out, _ = t("image", "list")
    assert code == 0 and "images/debian-12" in out
    code, out, _ = t("instance-type", "list")
    assert "bm-c64" in out
    code, out, _ = t("-o", "json", "instance", "create", "--type", "bm-c64", "--image", "debian-12")
    assert code == 0
    inst = json.loads(out)
    assert inst["host"] == "hosts/h0" and inst["state"] == "INSTANCE_STATE_SCHEDULED"
    code, out, _ = t("instance", "list")
    assert inst["name"] in out and "SCHEDULED" in out
    code, out, _ = t("instance", "get", inst["name"])
    assert code == 0 and "hosts/h0" in out
    code, out, _ = t("instance", "terminate", inst["name"])
    assert code == 0 and "TERMINATING" in out
    code, out, _ = t("volume", "create", "--size-gib", "20")
    assert code == 0 and "AVAILABLE" in out
    code, out, _ = t("-o", "json", "volume", "list")
    assert [v["size_gib"] for v in json.loads(out)] == ["20"]
    code, out, _ = t("-o", "json", "vpc", "create", "--cidr", "10.9.0.0/16")
    vpc = json.loads(out)["name"]
    code, out, _ = t("-o", "json", "subnet", "create", "--vpc", vpc, "--cidr", "10.9.1.0/24")
    subnet = json.loads(out)["name"]
    code, out, _ = t("nic", "create", "--subnet", subnet)
    assert code == 0 and "10.9.1.4" in out
    code, out, _ = t("nic", "list")
    assert subnet in out
    code, _, err = t("vpc", "delete", vpc)
    assert code == 1 and "FAILED_PRECONDITION" in err and "subnet" in err
    code, out, _ = t("placement-group", "create")
    assert code == 0 and "SPREAD_RACKS" in out


def test_errors_exit_non_zero_with_code_and_message(
    capsys: pytest.CaptureFixture[str], endpoint: str
) -> None:
    code, _, err = bmctl(capsys, endpoint, OPERATOR_TOKEN, "host", "get", "hosts/nope")
    assert code == 1 and "NOT_FOUND" in err and "hosts/nope" in err
    code, _, err = bmctl(capsys, endpoint, "wrong-token", "host", "list")
    assert code == 1 and "UNAUTHENTICATED" in err
    code, _, err = bmctl(
        capsys,
        endpoint,
        OPERATOR_TOKEN,
        "host",
        "enroll",
        "--zone",
        "Z 1",
        "--rack",
        "r",
        "--host-class",
        "c",
        "--cpus",
        "1",
        "--memory-gib",
        "1",
    )
    assert code == 1 and "INVALID_ARGUMENT" in err and "field host.zone" in err
    code, _, err = bmctl(capsys, "127.0.0.1:1", OPERATOR_TOKEN, "--timeout", "2", "host", "list")
    assert code == 1 and "UNAVAILABLE" in err


def test_console_script_runs_as_a_process(endpoint: str) -> None:
    env = {**os.environ, "BMAAS_ENDPOINT": endpoint, "BMAAS_TOKEN": OPERATOR_TOKEN}
    ok = subprocess.run(
        [sys.executable, "-m", "bmctl.main", "-o", "json", "tenant", "list"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=30,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout) == []
    bad = subprocess.run(
        [sys.executable, "-m", "bmctl.main", "tenant", "get", "tenants/ghost"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=30,
    )
    assert bad.returncode == 1 and "NOT_FOUND" in bad.stderr and "tenants/ghost" in bad.stderr


def test_several_endpoints_move_to_a_live_replica(
    capsys: pytest.CaptureFixture[str], etcd: EtcdServer
) -> None:
    """``--endpoint A,B``: when the replica bmctl used dies, the call goes to
    the other one; with every replica gone, one UNAVAILABLE line naming them."""
    with (
        ControlPlaneProcess(etcd, controllers=False) as first,
        ControlPlaneProcess(etcd, controllers=False) as second,
    ):
        both = f"127.0.0.1:{first.port},127.0.0.1:{second.port}"
        code, out, err = bmctl(capsys, both, OPERATOR_TOKEN, "tenant", "create", "--id", "t-a")
        assert code == 0, err
        first.kill()
        code, out, err = bmctl(capsys, both, OPERATOR_TOKEN, "tenant", "create", "--id", "t-b")
        assert code == 0, err
        code, out, _ = bmctl(capsys, both, OPERATOR_TOKEN, "-o", "json", "tenant", "list")
        assert code == 0
        assert sorted(t["name"] for t in json.loads(out)) == ["tenants/t-a", "tenants/t-b"]
        second.kill()
        code, _, err = bmctl(capsys, both, OPERATOR_TOKEN, "--timeout", "2", "tenant", "list")
    assert code == 1 and "UNAVAILABLE" in err and both.replace(",", ", ") in err
    assert len(err.strip().splitlines()) == 1
