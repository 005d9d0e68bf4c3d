"""The VPC fabric between two emulated hosts, proven with real pings.

Two namespaces play two hosts joined by a veth underlay (192.168.77.0/24).
Each host runs a ``Fabric`` for VPC A (VNI 4100) and VPC B (VNI 4200);
every guest is a namespace of its own whose eth0 is a veth whose host end
(``tap...``) stands in for the NIC's TAP.  A and B use the same address
range, so only the VNI keeps them apart::

    g1a 10.0.0.1 (A)   g1b 10.0.0.3 (B)        g2a 10.0.0.2 (A)   g2b 10.0.0.4 (B)
         |                  |                        |                  |
       tap1a              tap1b                    tap2a              tap2b
    bmbr4100           bmbr4200                 bmbr4100           bmbr4200
    bmvx4100           bmvx4200                 bmvx4100           bmvx4200
         \\______ host1 u1 ______ underlay ______ u2 host2 ______/
"""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Address

import pytest
from pyroute2 import IPRoute

from offload.network.errors import FabricConfigError, FabricError
from offload.network.fabric import Fabric, VpcPort
from tools.region.netns import NetNamespace

pytestmark = pytest.mark.integration

UNDERLAY = {1: IPv4Address("192.168.77.1"), 2: IPv4Address("192.168.77.2")}
VNI = {"a": 4100, "b": 4200}
GUEST_IP = {
    ("1", "a"): "10.0.0.1",
    ("2", "a"): "10.0.0.2",
    ("1", "b"): "10.0.0.3",
    ("2", "b"): "10.0.0.4",
}


def link_names(ns: NetNamespace) -> dict[str, int]:
    with IPRoute(netns=ns.name, flags=0, groups=0) as ipr:
        return {link.get_attr("IFLA_IFNAME"): link["index"] for link in ipr.get_links()}


def ports(host: int) -> list[VpcPort]:
    other = UNDERLAY[3 - host]
    return [
        VpcPort(vpc_id=f"vpc-{v}", vni=VNI[v], tap=f"tap{host}{v}", remotes=(other, UNDERLAY[host]))
        for v in ("a", "b")
    ]


def ping(ns: NetNamespace, ip: str, tries: int = 3) -> bool:
    return any(ns.run("ping", "-c1", "-W1", ip, check=False).returncode == 0 for _ in range(tries))


@pytest.fixture
def world(netns: Callable[[str], NetNamespace]) -> dict[str, NetNamespace]:
    hosts = {h: netns(f"h{h}") for h in ("1", "2")}
    hosts["1"].run(
        "ip", "link", "add", "u1", "type", "veth", "peer", "name", "u2", "netns", hosts["2"].name
    )
    for h in ("1", "2"):
        hosts[h].run("ip", "addr", "add", f"{UNDERLAY[int(h)]}/24", "dev", f"u{h}")
        hosts[h].run("ip", "link", "set", f"u{h}", "up")
        # something of the host's own that the fabric must never touch
        hosts[h].run("ip", "link", "add", "br-host", "type", "bridge")
        hosts[h].run("ip", "link", "add", "bmbr999", "type", "bridge")  # our prefix, no tag
    world = dict(hosts)
    for (h, v), ip in GUEST_IP.items():
        guest = netns(f"g{h}{v}")
        world[f"g{h}{v}"] = guest
        hosts[h].run(
            "ip",
            "link",
            "add",
            f"tap{h}{v}",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            guest.name,
        )
        guest.run("ip", "addr", "add", f"{ip}/24", "dev", "eth0")
        guest.run("ip", "link", "set", "eth0", "up")
    return world


def test_two_hosts_two_vpcs(world: dict[str, NetNamespace]) -> None:
    before = {h: link_names(world[h]) for h in ("1", "2")}
    fabrics = {h: Fabric(world[h].name, underlay_ip=UNDERLAY[int(h)]) for h in ("1", "2")}
    try:
        for h in ("1", "2"):
            result = fabrics[h].reconcile(ports(int(h)))
            assert result.missing_taps == () and result.changes
        details = world["1"].run("ip", "-d", "link", "show", "bmvx4100").stdout
        assert "vxlan id 4100 local 192.168.77.1" in details and "dstport 4789" in details
        assert "nolearning" in details and "mtu 1450" in details
        fdb = world["1"].run("bridge", "fdb", "show", "dev", "bmvx4100").stdout
        assert "00:00:00:00:00:00 dst 192.168.77.2" in fdb and "192.168.77.1" not in fdb

        # same VPC across hosts: reachable; other VPC (same range): not
        assert ping(world["g1a"], "10.0.0.2")
        assert ping(world["g1b"], "10.0.0.4")
        for src, dst in (
            ("g1a", "10.0.0.3"),
            ("g1a", "10.0.0.4"),
            ("g2b", "10.0.0.1"),
            ("g2b", "10.0.0.2"),
            ("g2a", "10.0.0.3"),
        ):
            assert not ping(world[src], dst, tries=1), f"{src} reached {dst} across VPCs"

        # a second run is a no-op
        links = {h: link_names(world[h]) for h in ("1", "2")}
        for h in ("1", "2"):
            assert fabrics[h].reconcile(ports(int(h))) == type(result)((), ())
            assert link_names(world[h]) == links[h]

        # moving a TAP to the other VPC, and dropping a remote host
        moved = [VpcPort("vpc-b", VNI["b"], "tap1a", (UNDERLAY[2],)), ports(1)[1]]
        changes = fabrics["1"].reconcile(moved).changes
        assert "attach tap1a to bmbr4200" in changes and "delete bmvx4100" in changes
        world["g1a"].run("ip", "neigh", "flush", "all")
        assert ping(world["g1a"], "10.0.0.4") and not ping(world["g1a"], "10.0.0.2", tries=1)

        # the underlay's MTU grows: the VXLAN device follows, nothing else changes
        world["2"].run("ip", "link", "set", "u2", "mtu", "9000")
        changes = fabrics["2"].reconcile(ports(2)).changes
        assert set(changes) == {"set bmvx4100 mtu 8950", "set bmvx4200 mtu 8950"}

        # a missing TAP is reported, the rest converges
        result = fabrics["2"].reconcile([*ports(2), VpcPort("vpc-a", VNI["a"], "tapnope")])
        assert result.missing_taps == ("tapnope",) and result.changes == ()

        # reconcile([]) removes what it created and nothing else
        for h in ("1", "2"):
            fabrics[h].reconcile([])
            assert link_names(world[h]) == before[h]
            assert fabrics[h].owned() == {}
            master = world[h].run("ip", "-o", "link", "show", f"tap{h}b").stdout
            assert "master" not in master
    finally:
        for f in fabrics.values():
            f.reconcile([])
            f.close()


def test_refuses_contradictions_and_foreign_links(world: dict[str, NetNamespace]) -> None:
    with Fabric(world["1"].name, underlay_ip=UNDERLAY[1]) as fabric:
        with pytest.raises(FabricConfigError):
            fabric.reconcile([VpcPort("vpc-a", 7, "tap1a"), VpcPort("vpc-b", 7, "tap1b")])
        with pytest.raises(FabricConfigError):
            fabric.reconcile([VpcPort("vpc-a", 7, "tap1a"), VpcPort("vpc-b", 8, "tap1a")])
        with pytest.raises(FabricConfigError):
            fabric.reconcile([VpcPort("vpc-a", 2**24, "tap1a")])
        with pytest.raises(FabricError):  # bmbr999 exists and is not ours
            fabric.reconcile([VpcPort("vpc-a", 999, "tap1a")])
        assert fabric.owned() == {}
    with Fabric(world["1"].name, underlay_ip="192.168.99.9") as fabric:
        with pytest.raises(FabricError):  # the underlay address is not on this host
            fabric.reconcile([VpcPort("vpc-a", 7, "tap1a")])
        fabric.reconcile([])
    with pytest.raises(FabricError):
        Fabric("bmaas-no-such-namespace", underlay_ip=UNDERLAY[1])


def test_pins_every_mac_of_the_vpc(world: dict[str, NetNamespace]) -> None:
    """Static entries: the local NIC's MAC on its TAP, a remote one on the VXLAN
    device and that device's entry to the remote VTEP; converged exactly."""
    local, remote, gone = "02:00:00:00:0a:01", "02:00:00:00:0a:02", "02:00:00:00:0a:03"
    with Fabric(world["1"].name, underlay_ip=UNDERLAY[1]) as fabric:
        try:
            port = VpcPort(
                "vpc-a",
                VNI["a"],
                "tap1a",
                (UNDERLAY[2],),
                mac=local,
                neighbors=((local, UNDERLAY[1]), (remote, UNDERLAY[2]), (gone, UNDERLAY[2])),
            )
            changes = fabric.reconcile([port]).changes
            assert f"pin {remote} to {UNDERLAY[2]} on bmvx4100" in changes
            fdb = world["1"].run("bridge", "fdb", "show", "br", "bmbr4100").stdout
            assert f"{local} dev tap1a master bmbr4100 static" in fdb, fdb
            assert f"{remote} dev bmvx4100 master bmbr4100 static" in fdb, fdb
            vx = world["1"].run("bridge", "fdb", "show", "dev", "bmvx4100").stdout
            assert f"{remote} dst {UNDERLAY[2]} self permanent" in vx, vx
            assert local not in vx  # a local MAC is never sent into the tunnel
            assert fabric.reconcile([port]).changes == ()  # converged
            # a neighbor goes away: its entries go too, the others stay
            fewer = VpcPort(
                "vpc-a", VNI["a"], "tap1a", (UNDERLAY[2],), mac=local,
                neighbors=((remote, UNDERLAY[2]),),
            )  # fmt: skip
            changes = fabric.reconcile([fewer]).changes
            assert set(changes) == {
                f"unpin {gone} from bmbr4100",
                f"unpin {gone} from bmvx4100",
            }, changes
            fdb = world["1"].run("bridge", "fdb", "show", "br", "bmbr4100").stdout
            assert gone not in fdb and remote in fdb
            with pytest.raises(FabricConfigError):  # not a unicast MAC: nothing changes
                fabric.reconcile([VpcPort("vpc-a", VNI["a"], "tap1a", mac="01:00:5e:00:00:01")])
        finally:
            fabric.reconcile([])
