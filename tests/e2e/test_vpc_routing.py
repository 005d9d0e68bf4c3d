"""Two subnets of one VPC on emulated hosts, routed by the card.

Real etcd, control plane, agents (qemu power driver) and guests, each host
a network namespace on a veth underlay, as in ``test_vpc_guests``.  A
server in subnet 10.20.1.0/24 and a client in 10.20.2.0/24 of the same VPC
get their addresses and default route (the card's gateway) by DHCP, ping
each other through the card, and the client sends 1 MiB over TCP whose
checksum the server matches.  A bystander in the server's subnet on a third
host pings the server all along (the positive control of the capture): its
TAP is captured while the routed traffic flows, and no frame between the
client and the server appears on it -- routed frames go by the pinned FDB
entries to the one host carrying the destination, never flooded.  The
client resolves the server's name through the resolver DHCP named (the
gateway): PTR of its address, then A of that name; a name outside the VPC
is REFUSED.  The bystander is created with a subnet: its primary interface
is there when the server powers on (its kernel sees eth0 before anything
waits for it) and the metadata service shows its address and MAC.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from bmaas.v1 import common_pb2, tenant_pb2
from host_agent.agent import Agent
from host_agent.metrics import DeviceCollector
from host_agent.reconcile.names import tap_name
from tools.region.guest import GuestImage, disk_with
from tools.region.netns import NetNamespace
from tools.region.region import Region, qemu_agent
from tools.region.wait import wait_for
from tools.region.world import enroll

pytestmark = pytest.mark.asyncio(loop_scope="session")
UNDERLAY = {1: "192.168.79.1", 2: "192.168.79.2", 3: "192.168.79.3"}

GUEST = """
echo BMAAS-IDLE
echo "NICS-AT-START $(ls /sys/class/net | tr '\\n' ' ')"
while ! ip link show eth0 >/dev/null 2>&1; do sleep 0.3; done
ip link set eth0 up
# the image's udhcpc script, plus the resolver DHCP named (option 6)
cat > /tmp/dhcp.sh <<'EOS'
#!/bin/sh
/etc/udhcpc/default.script "$@"
[ "$1" = bound ] && for d in $dns; do echo "nameserver $d"; done > /etc/resolv.conf
exit 0
EOS
chmod +x /tmp/dhcp.sh
udhcpc -i eth0 -f -q -n -t 20 -T 1 -s /tmp/dhcp.sh >/dev/null 2>&1 || echo DHCP-FAILED
echo "DHCP-ADDR $(ip -4 -o addr show eth0 | awk '{print $4}')"
echo "RESOLVER $(awk '/nameserver/ {print $2}' /etc/resolv.conf)"
echo "ROUTE $(ip route show default | awk '{print $3}')"
imds_token=$(printf 'PUT /latest/api/token HTTP/1.0\\r\\n%s\\r\\n\\r\\n' \\
  'X-aws-ec2-metadata-token-ttl-seconds: 300' | nc 169.254.169.254 80 | tail -n 1)
imds() {
  wget -q -O - --header "X-aws-ec2-metadata-token: $imds_token" "http://169.254.169.254/latest/$1"
}
echo "META-NIC $(imds meta-data/local-ipv4) $(imds meta-data/mac)"
ud=""; n=0
until ud=$(imds user-data); do n=$((n+1)); [ $n -gt 10 ] && break; sleep 1; done
echo "USER-DATA $ud"
set -- $ud
peer=$1 role=$2
if [ "$role" = bystander ]; then
  while true; do ping -c1 -W1 "$peer" >/dev/null 2>&1 || true; sleep 0.5; done
fi
n=0
until ping -c1 -W1 "$peer" >/dev/null 2>&1; do n=$((n+1)); [ $n -gt 120 ] && break; done
if ping -c3 -W2 "$peer" >/dev/null 2>&1; then echo "PING-OK $peer"; else echo "PING-FAIL $peer"; fi
echo "TTL $(ping -c1 -W2 "$peer" | grep -o 'ttl=[0-9]*')"
if [ "$role" = client ]; then
  ptr=$(nslookup "$peer" 2>&1 | tr '\\n' ' ')
  echo "DNS-PTR $ptr"
  name=$(echo "$ptr" | grep -o '[a-z0-9-]*[.]vpc-r[.]internal' | head -n 1)
  echo "DNS-A ${name:-none} $(nslookup "${name:-none}" 2>&1 | tr '\\n' ' ')"
  echo "DNS-OUT $(nslookup example.com 2>&1 | tr '\\n' ' ')"
fi
if [ "$role" = server ]; then
  nc -l -p 5000 > /tmp/recv
  echo "TCP-RX $(sha256sum /tmp/recv | cut -c1-64) $(wc -c < /tmp/recv)"
else
  dd if=/dev/urandom of=/tmp/send bs=1024 count=1024 2>/dev/null
  echo "TCP-TX $(sha256sum /tmp/send | cut -c1-64)"
  sleep 3
  n=0
  until nc -w 5 "$peer" 5000 < /tmp/send; do n=$((n+1)); [ $n -gt 30 ] && break; sleep 1; done
fi
while true; do sleep 1; done
"""

#: counts IPv4 frames on a TAP by (source, destination), and every frame from
#: one MAC (argv[2]: the guest behind the TAP, ARP included), until stdin closes
CAPTURE = r"""
import select, socket, sys
from collections import Counter
tap, mac = sys.argv[1], bytes.fromhex(sys.argv[2].replace(':', ''))
pairs = {tuple(p.split('>')) for p in sys.argv[3:]}
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
s.bind((tap, 0))
print("READY", flush=True)
seen = Counter()
while True:
    ready, _, _ = select.select([s, sys.stdin], [], [])
    if sys.stdin in ready:
        break
    frame = s.recv(65535)
    if frame[6:12] == mac:
        seen[('guest', 'any')] += 1
    if len(frame) >= 34 and frame[12:14] == b"\x08\x00":
        key = (socket.inet_ntoa(frame[26:30]), socket.inet_ntoa(frame[30:34]))
        if key in pairs:
            seen[key] += 1
for (a, b), n in sorted(seen.items()):
    print(f"{a}>{b} {n}")
print("DONE", flush=True)
"""


@pytest_asyncio.fixture(loop_scope="session")
async def hosts(
    netns: Callable[[str], NetNamespace],
) -> AsyncIterator[dict[int, NetNamespace]]:
    """Three emulated hosts on one underlay: a switch namespace with a bridge."""
    switch = netns("rul")
    switch.run("ip", "link", "add", "br0", "type", "bridge")
    switch.run("ip", "link", "set", "br0", "up")
    ns = {h: netns(f"rh{h}") for h in UNDERLAY}
    for h, host in ns.items():
        switch.run("ip", "link", "add", f"s{h}", "type", "veth", "peer", "name", "u0",
                   "netns", host.name)  # fmt: skip
        switch.run("ip", "link", "set", f"s{h}", "master", "br0", "up")
        host.run("ip", "addr", "add", f"{UNDERLAY[h]}/24", "dev", "u0")
        host.run("ip", "link", "set", "u0", "up")
    yield ns


async def _vpc(region: Region, vpc_id: str, cidrs: list[str]) -> list[str]:
    c, md = region.clients, region.tenant_md
    vpc = await c.tenant.CreateVpc(
        tenant_pb2.CreateVpcRequest(
            request_id=str(uuid.uuid4()),
            vpc=common_pb2.Vpc(name=f"{region.tenant}/vpcs/{vpc_id}", cidr="10.20.0.0/16"),
        ),
        metadata=md,
    )
    out = []
    for i, cidr in enumerate(cidrs, 1):
        subnet = await c.tenant.CreateSubnet(
            tenant_pb2.CreateSubnetRequest(
                request_id=str(uuid.uuid4()),
                subnet=common_pb2.Subnet(name=f"{vpc.name}/subnets/s{i}", cidr=cidr),
            ),
            metadata=md,
        )
        out.append(subnet.name)
    return out


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


def _host_of(agents: list[Agent], nic: str) -> Agent:
    (agent,) = [a for a in agents if any(b.spec.id == nic for b in a.reconciler.backends())]
    return agent


async def test_two_subnets_are_routed_by_the_card_and_never_flooded(
    region: Region,
    hosts: dict[int, NetNamespace],
    guest_image: GuestImage,
    tmp_path: Path,
) -> None:
    c, md = region.clients, region.tenant_md
    creds = {1: (region.host, region.credential)}
    for h in (2, 3):
        host, cred = await enroll(
            c, host_id=f"rmetal-{h}", host_class="small", power_driver="qemu", register=False
        )
        creds[h] = (host.name, cred)
    image = await region.register_image(
        "routed", disk_with(guest_image, GUEST, tmp_path / "routed.raw")
    )
    s1, s2 = await _vpc(region, "vpc-r", ["10.20.1.0/24", "10.20.2.0/24"])
    server, client = await _nic(region, s1, "eni-r1"), await _nic(region, s2, "eni-r2")
    plan = [
        (server, f"{client.private_ip} server"),
        (client, f"{server.private_ip} client"),
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
        # the bystander: created with a subnet, so with its primary interface
        made = await c.tenant.CreateInstance(
            tenant_pb2.CreateInstanceRequest(
                request_id=str(uuid.uuid4()),
                instance=common_pb2.Instance(
                    instance_type=region.instance_type,
                    image=image,
                    subnet=s1,
                    user_data=f"{server.private_ip} bystander",
                ),
            ),
            metadata=md,
        )
        (primary,) = made.network_interfaces
        bystander = await c.tenant.GetNetworkInterface(
            tenant_pb2.GetRequest(name=primary), metadata=md
        )
        plan.append((bystander, f"{server.private_ip} bystander"))
        names.append(made.name)
        try:
            for name, (nic, _) in zip(names, plan, strict=True):
                await region.wait_state(name, common_pb2.INSTANCE_STATE_RUNNING)
                addr = await region.wait_console(name, r"DHCP-ADDR (\S+)", 240)
                assert addr.group(1) == f"{nic.private_ip}/24"
                gateway = await region.wait_console(name, r"ROUTE (\S*)", 60)
                assert gateway.group(1) == nic.private_ip.rsplit(".", 1)[0] + ".1"
                resolver = await region.wait_console(name, r"RESOLVER (\S*)", 60)
                assert resolver.group(1) == gateway.group(1)  # DHCP option 6: the card
                meta = await region.wait_console(name, r"META-NIC (\S+) (\S+)", 60)
                assert meta.groups() == (nic.private_ip, nic.mac_address)
            # the primary interface was there when the server powered on: no hot-plug
            at_start = await region.wait_console(names[2], r"NICS-AT-START ([^\r\n]*)", 30)
            assert "eth0" in at_start.group(1).split(), at_start.group(0)
            # capture on the bystander's TAP, on its host, while the routed traffic flows
            watcher = _host_of(agents, bystander.name)
            pairs = [
                f"{client.private_ip}>{server.private_ip}",
                f"{server.private_ip}>{client.private_ip}",
                "guest>any",
            ]
            capture = await asyncio.create_subprocess_exec(
                "ip", "netns", "exec", watcher.config.netns, sys.executable, "-c", CAPTURE,
                tap_name(bystander.name), bystander.mac_address, *pairs,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            try:
                assert capture.stdout is not None
                ready = await asyncio.wait_for(capture.stdout.readline(), 30)
                assert ready.strip() == b"READY"
                for name, (_, user_data) in zip(names[:2], plan[:2], strict=True):
                    result = await region.wait_console(name, r"PING-(OK|FAIL) (\S+)", 240)
                    assert result.groups() == ("OK", user_data.split()[0]), await region.console(
                        name
                    )
                    ttl = await region.wait_console(name, r"TTL ttl=(\d+)", 30)
                    assert int(ttl.group(1)) == 63  # one hop: the card decremented it
                # the client resolved its peer through the card: PTR, then A; the rest refused
                server_fqdn = f"{names[0].rsplit('/', 1)[1]}.vpc-r.internal"
                ptr = await region.wait_console(names[1], r"DNS-PTR ([^\r\n]*)", 60)
                assert server_fqdn in ptr.group(1), ptr.group(1)
                a = await region.wait_console(names[1], r"DNS-A (\S+) ([^\r\n]*)", 60)
                assert a.group(1) == server_fqdn and server.private_ip in a.group(2), a.group(0)
                refused = await region.wait_console(names[1], r"DNS-OUT ([^\r\n]*)", 60)
                assert "REFUSED" in refused.group(1), refused.group(1)
                sent = await region.wait_console(names[1], r"TCP-TX ([0-9a-f]{64})", 60)
                received = await region.wait_console(names[0], r"TCP-RX ([0-9a-f]{64}) (\d+)", 240)
                assert received.groups() == (sent.group(1), str(1 << 20))
            finally:
                raw, _ = await asyncio.wait_for(capture.communicate(b""), 30)
            out = raw.decode()
            counts = {
                line.split()[0]: int(line.split()[1]) for line in out.splitlines() if ">" in line
            }
            # the capture sees the bystander's own frames (its ARP and pings): it works
            assert counts.get(pairs[2], 0) > 0, (out, await region.console(names[2]))
            assert counts.get(pairs[0], 0) == 0 and counts.get(pairs[1], 0) == 0, out

            # the cards counted what they routed
            def routed() -> tuple[float, float]:
                return (
                    _counter(agents, client.name, "bmaas_agent_nic_card_routed"),
                    _counter(agents, server.name, "bmaas_agent_nic_card_routed"),
                )

            async def both_routed() -> bool:  # back-ends write counters every second
                # the client's card routed the 1 MiB (at least 16 frames: with TSO a
                # frame carries up to 64 KiB) and the pings; the server's its ACKs
                # and ping replies
                sent, acked = routed()
                return sent >= (1 << 20) // (64 << 10) and acked >= 5

            try:
                await wait_for(both_routed, 10, 0.2)
            except AssertionError:
                raise AssertionError(f"routed (client, server): {routed()}") from None
        finally:  # guests never outlive the test, pass or fail
            for name in names:
                await region.action("Terminate", name)


def _counter(agents: list[Agent], nic: str, family_name: str) -> float:
    for agent in agents:
        for family in DeviceCollector(agent.reconciler.backends).collect():
            if family.name == family_name:
                for sample in family.samples:
                    if sample.labels["nic"] == nic:
                        return sample.value
    return 0.0
