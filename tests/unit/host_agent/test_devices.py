"""BlkSpec and NetSpec: the back-ends' command lines the agent builds; QoS limits files."""

from __future__ import annotations

import json
import os
import signal
from dataclasses import replace
from pathlib import Path

import pytest

from host_agent.devices import Backend, BlkSpec, NetSpec, RbdDisk

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


def _blk(tmp_path: Path, *, max_iops: int = 0, max_mbps: int = 0) -> BlkSpec:
    return BlkSpec(
        id="vol-1",
        image=tmp_path / "v.img",
        socket=tmp_path / "v.sock",
        max_iops=max_iops,
        max_mbps=max_mbps,
    )


def test_blk_limits_on_the_command_line(tmp_path: Path) -> None:
    argv = _blk(tmp_path, max_iops=500, max_mbps=20).args(tmp_path / "v.stats")
    assert argv[argv.index("--max-iops") + 1] == "500"
    assert argv[argv.index("--max-mbps") + 1] == "20"
    assert argv[argv.index("--limits") + 1] == str(tmp_path / "v.limits")


class _Signalled(Backend):
    """A back-end that is 'alive' and records the signals it would be sent."""

    sent: list[int]

    def alive(self) -> bool:
        return True

    def pid(self) -> int:
        return 4242


def test_apply_limits_rewrites_the_file_and_hups_only_on_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: sent.append((pid, sig)))
    backend = _Signalled(_blk(tmp_path, max_iops=100))
    limits = tmp_path / "v.limits"
    assert not backend.apply_limits(100, 0)  # first write, as started: no signal
    assert json.loads(limits.read_text()) == {"max_iops": 100, "max_mbps": 0}
    assert not backend.apply_limits(100, 0)
    assert backend.apply_limits(50, 10)
    assert json.loads(limits.read_text()) == {"max_iops": 50, "max_mbps": 10}
    assert sent == [(4242, signal.SIGHUP)]


def test_apply_limits_first_write_differing_from_the_command_line_hups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: sent.append((pid, sig)))
    # an adopted back-end started by a previous agent with other limits
    backend = _Signalled(_blk(tmp_path))
    assert backend.apply_limits(300, 0)
    assert sent == [(4242, signal.SIGHUP)]


def test_the_vpc_directory_goes_to_offload_net() -> None:
    argv = replace(SPEC, vpc_directory=Path("/state/vpc-n1.json")).args(Path("/run/n1.stats"))
    assert flag(argv, "--vpc-directory") == "/state/vpc-n1.json"
    assert "--vpc-directory" not in SPEC.args(Path("/run/n1.stats"))
    # without an address there are no card services, so no directory either
    bare = replace(SPEC, ip="", vpc_directory=Path("/state/vpc-n1.json"))
    assert "--vpc-directory" not in bare.args(Path("/run/n1.stats"))
