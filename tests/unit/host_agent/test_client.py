"""The protobuf edge of the agent: ``desired_from_pb`` and ``report_to_pb``."""

from __future__ import annotations

import pytest

from bmaas.v1 import agent_pb2, common_pb2
from host_agent.client import desired_from_pb, report_to_pb
from host_agent.desired import (
    Desired,
    DesiredInstance,
    DesiredNic,
    DesiredVolume,
    Phase,
    Power,
    VpcNeighbor,
)
from host_agent.reports import ConsoleReport, HostReport, InstanceReport


def _full_pb() -> agent_pb2.DesiredState:
    return agent_pb2.DesiredState(
        host="hosts/host-1",
        generation=42,
        state=common_pb2.HOST_STATE_ALLOCATED,
        clean=True,
        cleaning_epoch=5,
        instances=[
            agent_pb2.DesiredInstance(
                instance="instances/i-1",
                tenant="tenants/t",
                power=common_pb2.POWER_STATE_ON,
                state=common_pb2.INSTANCE_STATE_REBOOTING,
                terminate=True,
                image="images/ubuntu",
                image_source_uri="http://images/ubuntu.raw",
                volumes=[
                    agent_pb2.DesiredVolume(
                        volume="instances/i-1/boot",
                        size_gib=20,
                        boot=True,
                        source_image="images/ubuntu",
                        max_iops=3000,
                        max_mbps=125,
                        rbd_image="boot.t1.i-1",
                        rbd_parent="image.ubuntu@base",
                    ),
                    agent_pb2.DesiredVolume(volume="volumes/data", size_gib=2**40),
                ],
                nics=[
                    agent_pb2.DesiredNic(
                        network_interface="networkInterfaces/n-1",
                        mac_address="52:54:00:12:34:56",
                        private_ip="10.0.0.5",
                        subnet_cidr="10.0.0.0/24",
                        gateway_ip="10.0.0.1",
                        vni=4097,
                        vpc="vpcs/v-1",
                        peer_underlay_addresses=["192.0.2.11", "192.0.2.12"],
                        neighbors=[
                            agent_pb2.VpcNeighbor(
                                mac_address="02:00:00:00:00:07",
                                private_ip="10.0.1.7",
                                subnet_cidr="10.0.1.0/24",
                                underlay_address="192.0.2.11",
                                hostname="i-7",
                            )
                        ],
                    )
                ],
                user_data="#cloud-config\n",
                ssh_keys=["ssh-ed25519 AAAA one", "ssh-ed25519 BBBB two"],
                hostname="web-1",
                generation=2**40 + 3,
                image_checksum="sha256:" + "ab" * 32,
                metadata_tokens=common_pb2.METADATA_TOKENS_OPTIONAL,
            ),
            agent_pb2.DesiredInstance(
                instance="instances/i-2", power=common_pb2.POWER_STATE_OFF, generation=1
            ),
        ],
    )


def test_desired_from_a_fully_populated_message() -> None:
    desired = desired_from_pb(_full_pb())
    assert desired == Desired(
        host="hosts/host-1",
        generation=42,
        host_state="ALLOCATED",
        clean=True,
        cleaning_epoch=5,
        instances=(
            DesiredInstance(
                name="instances/i-1",
                tenant="tenants/t",
                state="REBOOTING",
                power=Power.ON,
                terminate=True,
                generation=2**40 + 3,
                image="images/ubuntu",
                image_uri="http://images/ubuntu.raw",
                image_checksum="sha256:" + "ab" * 32,
                metadata_tokens="optional",
                volumes=(
                    DesiredVolume(
                        volume="instances/i-1/boot",
                        size_gib=20,
                        boot=True,
                        source_image="images/ubuntu",
                        max_iops=3000,
                        max_mbps=125,
                        rbd_image="boot.t1.i-1",
                        rbd_parent="image.ubuntu@base",
                    ),
                    DesiredVolume(volume="volumes/data", size_gib=2**40),
                ),
                nics=(
                    DesiredNic(
                        name="networkInterfaces/n-1",
                        mac="52:54:00:12:34:56",
                        private_ip="10.0.0.5",
                        subnet_cidr="10.0.0.0/24",
                        gateway_ip="10.0.0.1",
                        vni=4097,
                        vpc="vpcs/v-1",
                        peers=("192.0.2.11", "192.0.2.12"),
                        neighbors=(
                            VpcNeighbor(
                                mac="02:00:00:00:00:07",
                                ip="10.0.1.7",
                                subnet_cidr="10.0.1.0/24",
                                underlay_address="192.0.2.11",
                                hostname="i-7",
                            ),
                        ),
                    ),
                ),
                hostname="web-1",
                user_data="#cloud-config\n",
                ssh_keys=("ssh-ed25519 AAAA one", "ssh-ed25519 BBBB two"),
            ),
            DesiredInstance(
                name="instances/i-2", state="UNSPECIFIED", power=Power.OFF, generation=1
            ),
        ),
    )
    # plain Python values, not protobuf containers or enums
    first = desired.instances[0]
    assert type(first.ssh_keys) is tuple
    assert type(first.nics[0].peers) is tuple
    assert type(first.nics[0].neighbors) is tuple
    assert type(first.power) is Power
    assert first.id == "i-1"
    assert first.wants_server is False  # terminate


def test_every_proto_field_is_converted() -> None:
    """A field added to agent.proto must be added to the conversion (and here)."""
    fields = {
        m: {f.name for f in getattr(agent_pb2, m).DESCRIPTOR.fields}
        for m in ("DesiredState", "DesiredInstance", "DesiredVolume", "DesiredNic", "VpcNeighbor")
    }
    assert fields == {
        "DesiredState": {"host", "generation", "state", "clean", "cleaning_epoch", "instances"},
        "DesiredInstance": {
            "instance",
            "tenant",
            "power",
            "state",
            "terminate",
            "image",
            "image_source_uri",
            "volumes",
            "nics",
            "user_data",
            "ssh_keys",
            "hostname",
            "generation",
            "image_checksum",
            "metadata_tokens",
        },
        "DesiredVolume": {
            "volume",
            "size_gib",
            "boot",
            "source_image",
            "max_iops",
            "max_mbps",
            "rbd_image",
            "rbd_parent",
        },
        "DesiredNic": {
            "network_interface",
            "mac_address",
            "private_ip",
            "subnet_cidr",
            "gateway_ip",
            "vni",
            "vpc",
            "peer_underlay_addresses",
            "neighbors",
        },
        "VpcNeighbor": {
            "mac_address",
            "private_ip",
            "subnet_cidr",
            "underlay_address",
            "hostname",
        },
    }


def test_empty_message_gives_defaults() -> None:
    desired = desired_from_pb(agent_pb2.DesiredState())
    assert desired == Desired(host="", host_state="UNSPECIFIED")


@pytest.mark.parametrize(
    ("phase", "state"),
    [
        (Phase.PROVISIONING, common_pb2.INSTANCE_STATE_PROVISIONING),
        (Phase.STARTING, common_pb2.INSTANCE_STATE_STARTING),
        (Phase.RUNNING, common_pb2.INSTANCE_STATE_RUNNING),
        (Phase.STOPPED, common_pb2.INSTANCE_STATE_STOPPED),
        (Phase.FAILED, common_pb2.INSTANCE_STATE_FAILED),
    ],
)
def test_instance_report(phase: Phase, state: common_pb2.InstanceState.ValueType) -> None:
    msg = report_to_pb("hosts/h", InstanceReport("instances/i-1", phase, 2**40 + 1, "why"))
    assert msg.WhichOneof("body") == "instance_status"
    assert msg.instance_status == agent_pb2.InstanceStatus(
        instance="instances/i-1", phase=state, message="why", generation=2**40 + 1
    )


def test_every_phase_has_a_proto_state() -> None:
    for phase in Phase:
        msg = report_to_pb("hosts/h", InstanceReport("i", phase, 0))
        name = common_pb2.InstanceState.Name(msg.instance_status.phase)
        assert name == f"INSTANCE_STATE_{phase.value}"


def test_instance_report_message_is_cut_to_4096() -> None:
    msg = report_to_pb("hosts/h", InstanceReport("i", Phase.FAILED, 1, "x" * 4096 + "y" * 10))
    assert msg.instance_status.message == "x" * 4096


def test_short_messages_are_kept_whole() -> None:
    text = "é" * 4096  # characters, not bytes
    assert report_to_pb(
        "h", InstanceReport("i", Phase.FAILED, 1, text)
    ).instance_status.message == (text)
    assert report_to_pb("h", HostReport(1, text)).host_status.message == text


def test_host_report() -> None:
    msg = report_to_pb("hosts/host-1", HostReport(9, "wipe of nvme0 failed"))
    assert msg.WhichOneof("body") == "host_status"
    assert msg.host_status == agent_pb2.HostStatus(
        host="hosts/host-1", wiped_epoch=9, message="wipe of nvme0 failed"
    )


def test_host_report_message_is_cut_to_4096() -> None:
    msg = report_to_pb("hosts/h", HostReport(1, "a" * 5000))
    assert msg.host_status.message == "a" * 4096


def test_console_report_keeps_the_newest_64k() -> None:
    tail = b"old" + bytes(range(256)) * 256 + b"new"  # 65536 + 6 bytes
    msg = report_to_pb("hosts/h", ConsoleReport("instances/i-1", tail))
    assert msg.WhichOneof("body") == "console"
    assert msg.console.instance == "instances/i-1"
    assert len(msg.console.tail) == 65536
    assert msg.console.tail == tail[-65536:]
    assert msg.console.tail.endswith(b"new")
    assert not msg.console.tail.startswith(b"old")


def test_short_console_tail_is_kept_whole() -> None:
    msg = report_to_pb("hosts/h", ConsoleReport("i", b"login: "))
    assert msg.console.tail == b"login: "
