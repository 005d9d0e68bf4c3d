"""Instances in a VPC, on emulated hosts, talk to each other; VPCs stay apart.

Everything through the tenant API and real components: a real etcd and
control plane; two hosts, each a network namespace with its card's side of
the network (TAPs, the VPC's bridge and VXLAN device) joined by a veth
underlay; a real agent per host (qemu power driver) whose card serves each
server's boot disk with ``offload-blk`` and its NIC with ``offload-net``.
Each guest gets its address by DHCP from its card, is refused metadata
without a session token (401), then takes an IMDSv2 token and reads its
instance-id and its peer's address (user-data) from the card's metadata
service at 169.254.169.254, and pings the peer across the VXLAN overlay.

The guests' image is unmodified: no ``pci=nomsi`` on its kernel command
line.  QEMU 7.2 under TCG crashes when a guest enables MSI-X vectors of a
virtio-net device on a vhost-user netdev (docs/offload.md); the qemu power
driver gives such devices ``vectors=0`` under TCG (the guest's driver uses
INTx), so any image's NIC works.  KVM does not have the problem.
"""

from __future__ import annotations

import asyncio
import stat
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from bmaas.v1 import common_pb2, tenant_pb2
from host_agent.agent import Agent
from host_agent.metrics import DeviceCollector
from tools.region.guest import GuestImage, disk_with
from tools.region.netns import NetNamespace
from tools.region.region import Region, qemu_agent
from tools.region.wait import wait_for
from tools.region.world import enroll

pytestmark = pytest.mark.asyncio(loop_scope="session")
UNDERLAY = {1: "192.168.78.1", 2: "192.168.78.2", 3: "192.168.78.3"}

GUEST = """
echo "CMDLINE $(cat /proc/cmdline)"
echo BMAAS-IDLE
while ! ip link show eth0 >/dev/null 2>&1; do sleep 0.3; done
ip link set eth0 up
udhcpc -i eth0 -f -q -n -t 20 -T 1 >/dev/null 2>&1 || echo DHCP-FAILED
echo "DHCP-ADDR $(ip -4 -o addr show eth0 | awk '{print $4}')"
v1=$(wget -O /dev/null http://169.254.169.254/latest/meta-data/ 2>&1 || true)
echo "META-V1 $(echo "$v1" | grep -o 'HTTP/1.1 [0-9]*')"
imds_token=$(printf 'PUT /latest/api/token HTTP/1.0\\r\\n%s\\r\\n\\r\\n' \\
  'X-aws-ec2-metadata-token-ttl-seconds: 300' | nc 169.254.169.254 80 | tail -n 1)
imds() {
  wget -q -O - --header "X-aws-ec2-metadata-token: $imds_token" "http://169.254.169.254/latest/$1"
}
echo "META-ID $(imds meta-data/instance-id)"
set -- $(imds user-data)
peer=$1 role=$2
tries=90; [ "$role" = isolated ] && tries=8
n=0
until ping -c1 -W1 "$peer" >/dev/null 2>&1; do
  n=$((n+1)); [ $n -gt $tries ] && break
done
if ping -c3 -W2 "$peer" >/dev/null 2>&1; then echo "PING-OK $peer"; else echo "PING-FAIL $peer"; fi
if [ "$role" = server ]; then
  nc -l -p 5000 > /tmp/recv
  echo "TCP-RX $(sha256sum /tmp/recv | cut -c1-64) $(wc -c < /tmp/recv)"
elif [ "$role" = client ]; then
  ip addr add 10.20.1.250/32 dev eth0
  if ping -c2 -W1 -I 10.20.1.250 "$peer" >/dev/null 2>&1; then s=OK; else s=FAIL; fi
  echo "SPOOF-PING-$s"
  ip addr del 10.20.1.250/32 dev eth0
  dd if=/dev/urandom of=/tmp/send bs=1024 count=1024 2>/dev/null
  echo "TCP-TX $(sha256sum /tmp/send | cut -c1-64)"
  n=0
  until nc -w 5 "$peer" 5000 < /tmp/send; do n=$((n+1)); [ $n -gt 30 ] && break; sleep 1; done
fi
while true; do sleep 1; done
"""


@pytest_asyncio.fixture(loop_scope="session")
async def hosts(
    netns: Callable[[str], NetNamespace],
) -> AsyncIterator[dict[int, NetNamespace]]:
    """Three emulated hosts on one underlay: a switch namespace with a bridge."""
    switch = netns("ul")
    switch.run("ip", "link", "add", "br0", "type", "bridge")
    switch.run("ip", "link", "set", "br0", "up")
    ns = {h: netns(f"h{h}") for h in UNDERLAY}
    for h, host in ns.items():
        switch.run("ip", "link", "add", f"s{h}", "type", "veth", "peer", "name", "u0",
                   "netns", host.name)  # fmt: skip
        switch.run("ip", "link", "set", f"s{h}", "master", "br0", "up")
        host.run("ip", "addr", "add", f"{UNDERLAY[h]}/24", "dev", "u0")
        host.run("ip", "link", "set", "u0", "up")
    yield ns


async def _subnet(region: Region, vpc_id: str) -> str:
    c, md = region.clients, region.tenant_md
    vpc = await c.tenant.CreateVpc(
        tenant_pb2.CreateVpcRequest(
            request_id=str(uuid.uuid4()),
            vpc=common_pb2.Vpc(name=f"{region.tenant}/vpcs/{vpc_id}", cidr="10.20.0.0/16"),
        ),
        metadata=md,
    )
    subnet = await c.tenant.CreateSubnet(
        tenant_pb2.CreateSubnetRequest(
            request_id=str(uuid.uuid4()),
            subnet=common_pb2.Subnet(name=f"{vpc.name}/subnets/s1", cidr="10.20.1.0/24"),
        ),
        metadata=md,
    )
    return subnet.name


async def _nic(region: Region, subnet: str, nic_id: str) -> common_pb2.NetworkInterface:
    return await region.clients.tenant.CreateNetworkInterface(
        tenant_pb2.CreateNetworkInterfaceRequest(
            request_id=str(uuid.uuid4()),
            network_interface=common_pb2.NetworkInterface(
                name=f"{region.tenant}/networkInterfaces/{nic_id}", subnet=subnet
            ),
        ),
        metadata=region.tenant_md,
    )


async def test_instances_in_a_vpc_talk_across_hosts_and_vpcs_stay_apart(
    region: Region,
    hosts: dict[int, NetNamespace],
    guest_image: GuestImage,
    tmp_path: Path,
) -> None:
    """VPC A: a server and a client on two hosts (DHCP, metadata, ping, 1 MiB
    over TCP, a spoofed source dropped); VPC B, same address range, on a third
    host: reaches neither."""
    c, md = region.clients, region.tenant_md
    creds = {1: (region.host, region.credential)}
    for h in (2, 3):
        host, cred = await enroll(
            c, host_id=f"metal-{h}", host_class="small", power_driver="qemu", register=False
        )
        creds[h] = (host.name, cred)
    image = await region.register_image("vpc", disk_with(guest_image, GUEST, tmp_path / "vpc.raw"))
    subnet_a, subnet_b = await _subnet(region, "vpc-a"), await _subnet(region, "vpc-b")
    server, client = await _nic(region, subnet_a, "eni-a1"), await _nic(region, subnet_a, "eni-a2")
    other = await _nic(region, subnet_b, "eni-b1")
    plan = [
        (server, f"{client.private_ip} server"),
        (client, f"{server.private_ip} client"),
        (other, f"{client.private_ip} isolated"),
    ]
    starting = [
        qemu_agent(
            region,
            tmp_path / f"agent{h}",
            guest_image,
            host=creds[h][0],
            credential=creds[h][1],
            netns=hosts[h].name,
            underlay_address=UNDERLAY[h],
        )
        for h in UNDERLAY
    ]
    async with starting[0] as a1, starting[1] as a2, starting[2] as a3:
        agents = [a1, a2, a3]
        names = []
        for nic, user_data in plan:
            name = await region.create(image, user_data=user_data)
            await c.tenant.AttachNetworkInterface(
                tenant_pb2.AttachNetworkInterfaceRequest(name=nic.name, instance=name),
                metadata=md,
            )
            names.append(name)
        for name, (nic, _) in zip(names, plan, strict=True):
            await region.wait_state(name, common_pb2.INSTANCE_STATE_RUNNING)
            cmdline = await region.wait_console(name, r"CMDLINE ([^\r\n]*)", 180)
            assert "nomsi" not in cmdline.group(1)  # an image as a tenant brings it
            addr = await region.wait_console(name, r"DHCP-ADDR (\S+)", 180)
            assert addr.group(1) == f"{nic.private_ip}/24"  # from the card's DHCP
            v1 = await region.wait_console(name, r"META-V1 (.*)", 60)
            assert v1.group(1).strip() == "HTTP/1.1 401"  # no session token: refused
            meta = await region.wait_console(name, r"META-ID (\S+)", 60)
            assert meta.group(1) == name.rsplit("/", 1)[1]  # from the card's metadata, IMDSv2
        expected = ["OK", "OK", "FAIL"]  # VPC B shares the range, not the segment
        for name, (_, user_data), want in zip(names, plan, expected, strict=True):
            result = await region.wait_console(name, r"PING-(OK|FAIL) (\S+)", 180)
            assert result.groups() == (want, user_data.split()[0]), await region.console(name)
        spoof = await region.wait_console(names[1], r"SPOOF-PING-(OK|FAIL)", 60)
        assert spoof.group(1) == "FAIL"
        sent = await region.wait_console(names[1], r"TCP-TX ([0-9a-f]{64})", 60)
        received = await region.wait_console(names[0], r"TCP-RX ([0-9a-f]{64}) (\d+)", 120)
        assert received.groups() == (sent.group(1), str(1 << 20))
        # the card counted what it dropped and what it answered itself
        await asyncio.sleep(1.5)  # back-ends write their counters every second
        verdicts = _nic_verdicts(agents, client.name)  # wherever the scheduler put it
        assert verdicts.get("dropped_spoofed", 0) > 0, verdicts
        assert verdicts.get("consumed", 0) > 0, verdicts
        # the tenant's user data and keys on the card: 0600 in 0700 directories
        meta_files = [f for a in agents for f in a.config.state_dir.glob("instances/*/n*.json")]
        assert len(meta_files) == 3, meta_files
        for f in meta_files:
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
            for d in (f.parent, f.parent.parent.parent):  # the instance's and the state dir
                assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
        # the guest kernel's own IPv6 (link-local NDP, MLD): the NIC has no IPv6 address
        drops = _nic_counters(agents, client.name, "bmaas_agent_nic_card_drops", "reason")
        assert drops.get("ipv6_disabled", 0) > 0 and drops.get("ipv4_src", 0) > 0, drops
        for name in names:
            await region.action("Terminate", name)
        for agent in agents:
            await wait_for(_no_ports(agent), 60, 0.2)
    for h in UNDERLAY:  # nothing of the fabric or the NICs is left on the hosts
        links = hosts[h].run("ip", "-o", "link").stdout
        assert "bmbr" not in links and "bmvx" not in links and "bmt" not in links, links


def _nic_verdicts(agents: list[Agent], nic: str) -> dict[str, float]:
    """The card's verdict counters of *nic*, as its agent's metrics export them."""
    return _nic_counters(agents, nic, "bmaas_agent_nic_card_verdicts", "verdict")


def _nic_counters(agents: list[Agent], nic: str, family_name: str, label: str) -> dict[str, float]:
    """One counter family of *nic* by *label*, as its agent's metrics export them."""
    out: dict[str, float] = {}
    for agent in agents:
        for family in DeviceCollector(agent.reconciler.backends).collect():
            if family.name == family_name:
                for sample in family.samples:
                    if sample.labels["nic"] == nic:
                        out[sample.labels[label]] = sample.value
    return out


def _no_ports(agent: Agent) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return not agent.reconciler._ports and not agent.reconciler.backends()

    return check
