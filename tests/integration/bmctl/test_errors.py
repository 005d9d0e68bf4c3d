"""Failures against a real control plane: one line on stderr
(``bmctl: error: ...``), nothing on stdout, never a traceback, and the
documented exit status - also when bmctl runs as a process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bmctl import exitcodes
from tests.integration.bmctl.conftest import Bmctl, World, covers, default_pki, make_pki

ROOT = Path(__file__).resolve().parents[3]


def one_line(err: str) -> str:
    (line,) = err.splitlines()
    assert line.startswith("bmctl: error: ") and "Traceback" not in line
    return line


@covers("host get", "tenant get", "instance get", "volume get", "instance stop")
def test_unknown_resources_exit_3(world: World) -> None:
    for run, args in [
        (world.op, ("host", "get", "hosts/nope")),
        (world.op, ("tenant", "get", "ghost")),
        (world.t, ("instance", "get", f"{world.tenant}/instances/nope")),
        (world.t, ("volume", "get", f"{world.tenant}/volumes/nope")),
        (world.t, ("instance", "stop", f"{world.tenant}/instances/nope", "--wait")),
    ]:
        got = run(*args, expect=exitcodes.NOT_FOUND)
        line = one_line(got.err)
        assert "NOT_FOUND" in line and args[2].split("/")[-1] in line and got.out == ""
    # another tenant's resource is simply not found, too
    assert "NOT_FOUND" in world.t("instance", "get", "tenants/other/instances/x", expect=3).err


@covers("host list", "host enroll", "instance create", "volume create", "quota set")
def test_api_errors_exit_1_on_one_line(world: World, endpoint: str, bmctl: Bmctl) -> None:
    line = one_line(bmctl.at(endpoint, "wrong-token")("host", "list", expect=1).err)
    assert "UNAUTHENTICATED" in line
    bad = world.op(
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
        "--power-driver",
        "fake",
        expect=1,
    )
    assert "INVALID_ARGUMENT: host.zone: must be" in one_line(bad.err)
    world.op("quota", "set", world.tenant, "--max-volume-gib", "10")
    big = world.t("volume", "create", "--size-gib", "20", expect=1)
    assert "RESOURCE_EXHAUSTED" in one_line(big.err) and "; quota " in big.err
    huge = world.t("volume", "create", "--size-gib", "99999", expect=1)
    assert one_line(huge.err).count("99999") == 1  # a violation the message said is not repeated
    no_type = world.t("instance", "create", "--type", "nope", "--image", "debian-12", expect=3)
    assert "instanceTypes/nope" in one_line(no_type.err)


@covers("host list", "instance create", "tenant list")
def test_usage_errors_exit_2(
    world: World, bmctl: Bmctl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for args, problem in [
        (("host", "enroll", "--zone", "z"), "required"),
        (
            ("instance", "create", "--type", "t", "--image", "i", "--user-data-file", "/nope"),
            "--user-data-file /nope: No such file",
        ),
        (
            ("instance", "create", "--type", "t", "--image", "i", "--wait", "--timeout", "soon"),
            "expected seconds",
        ),
        (("host", "list", "--page-size", "-1"), "out of range"),
        (("host", "list", "--filter"), "expected one argument"),
    ]:
        got = world.op(*args, expect=exitcodes.USAGE)
        assert problem in one_line(got.err) and got.out == ""
    missing = world.op("--token-file", str(tmp_path / "gone"), "tenant", "list", token="", expect=2)
    assert "--token-file" in one_line(missing.err)
    config = tmp_path / "bad.toml"
    config.write_text("current-context = [\n")
    monkeypatch.setenv("BMAAS_CONFIG", str(config))
    broken = world.op("tenant", "list", expect=2)
    assert f"config {config}: invalid TOML" in one_line(broken.err)


@covers("host list", "tenant list")
def test_unreachable_endpoint_exits_5(bmctl: Bmctl) -> None:
    got = bmctl.at("127.0.0.1:1")("--request-timeout", "2", "host", "list", expect=5)
    assert "UNAVAILABLE" in one_line(got.err) and "127.0.0.1:1" in got.err
    got = bmctl.at("no-such-host.invalid:7443")("tenant", "list", expect=5)
    assert "UNAVAILABLE" in one_line(got.err)


@covers("tenant list", "tenant get")
def test_bmctl_as_a_process(endpoint: str, bmctl: Bmctl) -> None:
    env = {
        **os.environ,
        "BMAAS_ENDPOINT": endpoint,
        "BMAAS_TOKEN": "op-test-token-0123456789abcdef",
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        bmctl.invoked.add((args[-2], args[-1]) if args[-1] == "list" else (args[-3], args[-2]))
        return subprocess.run(
            [sys.executable, "-m", "bmctl.main", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=60,
        )

    ok = run("-o", "json", "tenant", "list")
    assert ok.returncode == 0 and ok.stdout.strip() == "[]", ok.stderr
    bad = run("tenant", "get", "tenants/ghost", "x")
    assert bad.returncode == 2 and "unrecognized arguments: x" in one_line(bad.stderr)
    bad = run("tenant", "get", "tenants/ghost")
    assert bad.returncode == 3 and "tenants/ghost" in one_line(bad.stderr)
    assert bad.stdout == ""


@covers("host list")
def test_tls_trust_is_one_line_as_a_process(endpoint: str, bmctl: Bmctl, tmp_path: Path) -> None:
    """The control plane speaks TLS with the region's CA: trusting another CA,
    or none, or talking plaintext is UNAVAILABLE (exit 5) in one line."""
    rogue = make_pki(tmp_path / "rogue", name="rogue")
    env = {k: v for k, v in os.environ.items() if k not in ("BMAAS_CA", "GRPC_VERBOSITY")}
    env |= {"BMAAS_ENDPOINT": endpoint, "BMAAS_TOKEN": "op-test-token-0123456789abcdef"}
    bmctl.invoked.add(("host", "list"))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bmctl.main", *args, "-o", "json", "host", "list"],
            capture_output=True, text=True, env=env, cwd=ROOT, timeout=60,
        )  # fmt: skip

    ok = run("--ca", str(default_pki().ca))
    assert ok.returncode == 0 and ok.stdout.strip() == "[]", ok.stderr
    for flags, says in (
        (("--ca", str(rogue.ca)), "CERTIFICATE_VERIFY_FAILED"),
        ((), "CERTIFICATE_VERIFY_FAILED"),  # the system's roots do not know the region's CA
        (("--insecure",), "UNAVAILABLE"),
    ):
        bad = run(*flags)
        assert bad.returncode == exitcodes.UNREACHABLE, (flags, bad.stderr)
        assert says in one_line(bad.stderr) and bad.stdout == ""
    both = run("--insecure", "--ca", str(default_pki().ca))
    assert both.returncode == exitcodes.USAGE and "exclude" in one_line(both.stderr)
    missing = run("--ca", str(tmp_path / "none.pem"))
    assert missing.returncode == exitcodes.USAGE and "none.pem" in one_line(missing.stderr)
