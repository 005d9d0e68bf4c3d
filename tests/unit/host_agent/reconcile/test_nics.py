"""What the agent tells offload-net about the VPC: the directory file, which
offload-net itself must accept, rewritten only when it changes."""

from __future__ import annotations

import stat
from dataclasses import replace
from ipaddress import IPv4Address
from pathlib import Path

from host_agent.desired import DesiredNic, VpcNeighbor
from host_agent.reconcile.nics import _directory, _write_if_changed
from offload.network.directory_file import load_directory

NIC = DesiredNic(
    name="tenants/t/networkInterfaces/n1",
    mac="02:00:00:00:00:01",
    private_ip="10.0.1.5",
    subnet_cidr="10.0.1.0/24",
    gateway_ip="10.0.1.1",
    vni=4100,
    vpc="tenants/t/vpcs/vpc-a",
    neighbors=(
        VpcNeighbor(
            mac="02:00:00:00:00:01",
            ip="10.0.1.5",
            subnet_cidr="10.0.1.0/24",
            underlay_address="192.0.2.1",
            hostname="i-1",
        ),
        VpcNeighbor(
            mac="02:00:00:00:00:02",
            ip="10.0.2.5",
            subnet_cidr="10.0.2.0/24",
            underlay_address="192.0.2.2",
            hostname="i-2",
        ),
    ),
)


def test_the_directory_file_is_what_offload_net_reads(tmp_path: Path) -> None:
    path = tmp_path / "vpc-n1.json"
    assert _write_if_changed(path, _directory(NIC))
    directory = load_directory(path)
    assert directory.vpc == "vpc-a"
    assert [(n.ip, n.hostname) for n in directory.neighbors] == [
        (IPv4Address("10.0.1.5"), "i-1"),
        (IPv4Address("10.0.2.5"), "i-2"),
    ]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_rewritten_only_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "vpc-n1.json"
    assert _write_if_changed(path, _directory(NIC))
    before = path.stat().st_ino
    assert not _write_if_changed(path, _directory(NIC))  # no signal for the same directory
    assert path.stat().st_ino == before
    fewer = replace(NIC, neighbors=())
    assert _write_if_changed(path, _directory(fewer))
    assert load_directory(path).neighbors == ()
