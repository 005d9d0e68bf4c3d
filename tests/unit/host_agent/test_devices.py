"""NetSpec: the offload-net command line the agent builds for a NIC."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from host_agent.devices import BlkSpec, NetSpec, RbdDisk

SPEC = NetSpec(
    id="nics/n1",
    socket=Path("/run/n1.sock"),
    tap="tap-n1",
    mac="52:54:00:00:00:01",
    ip="10.0.0.5/24",
    gateway="10.0.0.1",
    metadata=Path("/state/n1.json"),
)


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_metadata_tokens_required_by_default() -> None:
    argv = SPEC.args(Path("/run/n1.stats"))
    assert flag(argv, "--metadata-tokens") == "required"
    assert flag(argv, "--metadata") == "/state/n1.json"


def test_metadata_tokens_passed_through() -> None:
    argv = replace(SPEC, metadata_tokens="optional").args(Path("/run/n1.stats"))
    assert flag(argv, "--metadata-tokens") == "optional"


def test_no_services_without_an_address() -> None:
    argv = replace(SPEC, ip="").args(Path("/run/n1.stats"))
    assert "--metadata-tokens" not in argv and "--ip" not in argv


def test_a_cloud_disk_is_served_with_offload_blk_rbd() -> None:
    disk = RbdDisk(
        pool="bmaas", image="boot.t1.i1", conf=Path("/etc/ceph/ceph.conf"), client_id="bm"
    )
    spec = BlkSpec(id="v", image=disk, socket=Path("/run/x.sock"), serial="vboot")
    argv = spec.args(Path("/run/x.stats"))
    assert argv[:8] == [
        "--socket", "/run/x.sock", "--rbd", "bmaas/boot.t1.i1",
        "--ceph-conf", "/etc/ceph/ceph.conf", "--ceph-id", "bm",
    ]  # fmt: skip
    assert "--image" not in argv
    files = BlkSpec(id="v", image=Path("/v/a.img"), socket=Path("/run/x.sock"))
    assert files.args(Path("/s"))[:4] == ["--socket", "/run/x.sock", "--image", "/v/a.img"]
