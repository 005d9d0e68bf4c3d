"""The VPC fabric on one host: a bridge and a VXLAN device per VPC, via pyroute2.

``Fabric.reconcile(desired)`` is level-triggered: it reads the links, their
masters and the VXLAN flood entries, and converges them on the list of
``VpcPort``s, so running it twice in a row changes nothing the second time
(the returned ``ReconcileResult.changes`` is empty).  For every VNI in the
list it makes sure that

* bridge ``bmbr<vni>`` exists and is up (STP off, no IPv6 address, so the
  host never speaks into a tenant's VPC);
* VXLAN ``bmvx<vni>`` exists with that VNI, ``local`` the host's underlay
  address, destination port 4789, learning off, the underlay device as its
  link and an MTU 50 bytes below it (followed when the underlay's changes),
  is enslaved to the bridge and up; a device whose parameters differ is
  deleted and created again;
* the VXLAN device's flood list (FDB entries ``00:00:00:00:00:00 dst
  <remote>``) is exactly the other hosts carrying the VPC, so broadcast and
  unknown unicast go by head-end replication to those hosts only;
* each TAP of the VPC is enslaved to the bridge and up;
* every MAC of the VPC is pinned, so a unicast frame to a known interface is
  never flooded (routed frames above all: no port of the bridge ever learns
  a destination the card routes to before it answers): a static bridge entry
  (``master static``) sends the MAC of a local NIC to its TAP and the MAC
  of a remote one to the VXLAN device, whose own entry (``self permanent``)
  sends it to the VTEP of the host carrying it.  Static entries of our
  bridges and unicast entries of our VXLAN devices that are not wanted are
  deleted; learned entries are left to age.

Then it takes every other port off our bridges, and deletes our bridges and
VXLAN devices whose VNI is no longer wanted.  "Ours" means both the name
prefix and the ``IFLA_IFALIAS`` tag ``bmaas-fabric vpc=<id>`` that every
device gets at creation: nothing else on the host is ever changed, except
that a TAP we were told about is enslaved, set up, and released again
(it is never deleted; TAPs belong to the device back-end).  A link that has
one of our names without our tag stops the reconcile with ``FabricError``.

Names come from the VNI (up to 8 decimal digits, so at most 12 characters,
within the kernel's 15).  A TAP that does not exist yet is reported in
``missing_taps`` and everything else still converges; call again once it
exists.  Every netlink failure is raised as ``FabricError``.

All calls go through one synchronous ``IPRoute`` opened in the given
namespace (``None``: the current one) with no multicast groups; a lock
serialises callers.  Do not call it from a running asyncio loop (pyroute2's
synchronous API runs its own loop): use ``asyncio.to_thread``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from types import TracebackType
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from offload.network.errors import FabricConfigError, FabricError

__all__ = [
    "BRIDGE_PREFIX",
    "OWNER_TAG",
    "VXLAN_PORT",
    "VXLAN_PREFIX",
    "Fabric",
    "ReconcileResult",
    "VpcPort",
    "bridge_name",
    "vxlan_name",
]

BRIDGE_PREFIX = "bmbr"
VXLAN_PREFIX = "bmvx"
OWNER_TAG = "bmaas-fabric"
VXLAN_PORT = 4789
VXLAN_OVERHEAD = 50
MAX_VNI = 2**24 - 1
IFF_UP = 0x1
AF_INET = 2
ZERO_MAC = "00:00:00:00:00:00"
NTF_SELF = 0x02
NTF_MASTER = 0x04
NUD_NOARP = 0x40  # a bridge's "static" entry
NUD_PERMANENT = 0x80
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
_IFNAME = re.compile(r"[A-Za-z0-9_.:-]{1,15}")
_OURS = re.compile(rf"({BRIDGE_PREFIX}|{VXLAN_PREFIX})(\d{{1,8}})")


def bridge_name(vni: int) -> str:
    return f"{BRIDGE_PREFIX}{vni}"


def vxlan_name(vni: int) -> str:
    return f"{VXLAN_PREFIX}{vni}"


@dataclass(frozen=True, slots=True)
class VpcPort:
    """One TAP of a VPC on this host, and the underlay addresses of the VPC's other hosts."""

    vpc_id: str
    vni: int
    tap: str
    remotes: tuple[IPv4Address, ...] = ()
    #: the MAC of the NIC behind the TAP ("": not pinned)
    mac: str = ""
    #: (MAC, VTEP) of the VPC's interfaces: pinned to the VXLAN device unless local
    neighbors: tuple[tuple[str, IPv4Address], ...] = ()


@dataclass(frozen=True, slots=True)
class ReconcileResult:
    changes: tuple[str, ...]
    missing_taps: tuple[str, ...]


@dataclass(slots=True)
class _Vpc:
    vpc_id: str
    remotes: set[IPv4Address]
    taps: set[str]
    #: MAC -> the local TAP it sits behind
    local: dict[str, str] = field(default_factory=dict)
    #: MAC -> the VTEP of the host carrying it
    remote: dict[str, IPv4Address] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Link:
    index: int
    name: str
    up: bool
    master: int
    alias: str
    mtu: int
    kind: str
    data: dict[str, Any]


def _mac(text: str) -> str:
    mac = text.lower()
    if not _MAC.fullmatch(mac) or int(mac[:2], 16) & 1 or mac == ZERO_MAC:
        raise FabricConfigError(f"{text!r} is not a unicast MAC")
    return mac


def _plan(desired: Iterable[VpcPort], underlay: IPv4Address) -> dict[int, _Vpc]:
    vpcs: dict[int, _Vpc] = {}
    vni_of_vpc: dict[str, int] = {}
    vni_of_tap: dict[str, int] = {}
    for port in desired:
        if not 1 <= port.vni <= MAX_VNI:
            raise FabricConfigError(f"VNI {port.vni} is outside 1..{MAX_VNI}")
        if not _IFNAME.fullmatch(port.tap) or _OURS.fullmatch(port.tap):
            raise FabricConfigError(f"{port.tap!r} cannot be a TAP name")
        if not port.vpc_id or len(port.vpc_id) > 64 or not port.vpc_id.isprintable():
            raise FabricConfigError(f"VPC id {port.vpc_id!r} is empty, too long or unprintable")
        if vni_of_vpc.setdefault(port.vpc_id, port.vni) != port.vni:
            raise FabricConfigError(f"VPC {port.vpc_id} has two VNIs")
        if vni_of_tap.setdefault(port.tap, port.vni) != port.vni:
            raise FabricConfigError(f"TAP {port.tap} is in two VPCs")
        vpc = vpcs.setdefault(port.vni, _Vpc(port.vpc_id, set(), set()))
        if vpc.vpc_id != port.vpc_id:
            raise FabricConfigError(f"VNI {port.vni} is given to {vpc.vpc_id} and {port.vpc_id}")
        vpc.taps.add(port.tap)
        vpc.remotes.update(IPv4Address(r) for r in port.remotes)
        vpc.remotes.discard(underlay)
        if port.mac:
            vpc.local[_mac(port.mac)] = port.tap
        for mac, vtep in port.neighbors:
            if IPv4Address(vtep) != underlay:
                vpc.remote[_mac(mac)] = IPv4Address(vtep)
    for vpc in vpcs.values():
        for mac in vpc.local:
            vpc.remote.pop(mac, None)
    return vpcs


class Fabric:
    """The bridges, VXLAN devices and flood lists of the VPCs on one host (or namespace)."""

    def __init__(
        self,
        netns: str | None = None,
        *,
        underlay_ip: IPv4Address | str,
        vxlan_port: int = VXLAN_PORT,
    ) -> None:
        self.netns = netns
        self.underlay_ip = IPv4Address(underlay_ip)
        self.vxlan_port = vxlan_port
        self._lock = threading.Lock()
        try:
            self._ipr = IPRoute(netns=netns, flags=0, groups=0) if netns else IPRoute(groups=0)
        except (OSError, NetlinkError) as exc:
            raise FabricError(f"cannot open netlink in namespace {netns}: {exc}") from exc
        self._changes: list[str] = []

    def close(self) -> None:
        """Close the netlink socket; the fabric itself stays (``reconcile([])`` removes it)."""
        self._ipr.close()

    def __enter__(self) -> Fabric:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- public -------------------------------------------------------------

    def reconcile(self, desired: Iterable[VpcPort]) -> ReconcileResult:
        """Converge the host's fabric on *desired*; see the module docstring."""
        vpcs = _plan(desired, self.underlay_ip)
        with self._lock:
            self._changes = []
            try:
                missing = self._reconcile(vpcs)
            except NetlinkError as exc:
                raise FabricError(f"netlink: {exc} (after {self._changes})") from exc
            return ReconcileResult(tuple(self._changes), tuple(sorted(missing)))

    def owned(self) -> dict[str, int]:
        """Our links by name -> ifindex (what ``reconcile([])`` would delete)."""
        with self._lock:
            return {link.name: link.index for link in self._links().values() if self._ours(link)}

    # -- reading ------------------------------------------------------------

    def _links(self) -> dict[str, _Link]:
        links: dict[str, _Link] = {}
        for msg in self._ipr.get_links():
            info = msg.get_attr("IFLA_LINKINFO")
            kind, data = "", {}
            if info is not None:
                kind = info.get_attr("IFLA_INFO_KIND") or ""
                raw = info.get_attr("IFLA_INFO_DATA")
                if raw is not None and hasattr(raw, "get_attrs"):
                    data = {name: value for name, value in raw.get("attrs", [])}
            name = msg.get_attr("IFLA_IFNAME")
            links[name] = _Link(
                index=msg["index"],
                name=name,
                up=bool(msg["flags"] & IFF_UP),
                master=msg.get_attr("IFLA_MASTER") or 0,
                alias=msg.get_attr("IFLA_IFALIAS") or "",
                mtu=msg.get_attr("IFLA_MTU") or 0,
                kind=kind,
                data=data,
            )
        return links

    @staticmethod
    def _ours(link: _Link) -> bool:
        return bool(_OURS.fullmatch(link.name)) and link.alias.startswith(OWNER_TAG + " ")

    def _underlay(self, links: dict[str, _Link]) -> _Link:
        for msg in self._ipr.get_addr(family=AF_INET):
            if msg.get_attr("IFA_LOCAL") == str(self.underlay_ip):
                for link in links.values():
                    if link.index == msg["index"]:
                        return link
        raise FabricError(f"underlay address {self.underlay_ip} is not configured here")

    def _flood_list(self, index: int) -> set[IPv4Address]:
        found = set()
        for entry in self._ipr.fdb("dump", ifindex=index):
            dst = entry.get_attr("NDA_DST")
            if entry["ifindex"] == index and dst and entry.get_attr("NDA_LLADDR") == ZERO_MAC:
                found.add(IPv4Address(dst))
        return found

    # -- converging ---------------------------------------------------------

    def _did(self, what: str) -> None:
        self._changes.append(what)

    def _reconcile(self, vpcs: dict[int, _Vpc]) -> set[str]:
        links = self._links()
        for vni in vpcs:
            for name in (bridge_name(vni), vxlan_name(vni)):
                link = links.get(name)
                if link is not None and not self._ours(link):
                    raise FabricError(f"{name} exists but was not created by the fabric")
        underlay = self._underlay(links) if vpcs else None
        missing: set[str] = set()
        wanted_ports: dict[int, set[int]] = {}  # bridge ifindex -> port ifindexes
        for vni, vpc in sorted(vpcs.items()):
            bridge = self._ensure_bridge(vni, vpc, links)
            assert underlay is not None
            vxlan = self._ensure_vxlan(vni, vpc, links, bridge, underlay)
            self._ensure_flood_list(vxlan, vpc.remotes)
            ports = wanted_ports.setdefault(bridge.index, {vxlan.index})
            tap_index: dict[str, int] = {}
            for tap in sorted(vpc.taps):
                link = links.get(tap)
                if link is None:
                    missing.add(tap)
                    continue
                ports.add(link.index)
                tap_index[tap] = link.index
                if link.master != bridge.index:
                    self._ipr.link("set", index=link.index, master=bridge.index)
                    self._did(f"attach {tap} to {bridge.name}")
                if not link.up:
                    self._ipr.link("set", index=link.index, state="up")
                    self._did(f"set {tap} up")
            pinned = {mac: vxlan.index for mac in vpc.remote}
            pinned.update((m, tap_index[t]) for m, t in vpc.local.items() if t in tap_index)
            self._ensure_pinned(bridge, vxlan, pinned, vpc.remote)
        links = self._links()
        ours = {link.index: link for link in links.values() if self._ours(link)}
        for link in links.values():
            if link.master in ours and link.index not in wanted_ports.get(link.master, set()):
                self._ipr.link("set", index=link.index, master=0)
                self._did(f"detach {link.name} from {ours[link.master].name}")
        wanted_names = {bridge_name(v) for v in vpcs} | {vxlan_name(v) for v in vpcs}
        for link in sorted(ours.values(), key=lambda li: li.kind != "vxlan"):
            if link.name not in wanted_names:
                self._ipr.link("del", index=link.index)
                self._did(f"delete {link.name}")
        return missing

    def _alias(self, vpc: _Vpc) -> str:
        return f"{OWNER_TAG} vpc={vpc.vpc_id}"

    def _ensure_bridge(self, vni: int, vpc: _Vpc, links: dict[str, _Link]) -> _Link:
        name = bridge_name(vni)
        link = links.get(name)
        if link is None:
            self._ipr.link("add", ifname=name, kind="bridge", br_stp_state=0)
            self._did(f"create {name}")
            link = self._configure_new(name, vpc)
        elif link.alias != self._alias(vpc):
            self._ipr.link("set", index=link.index, ifalias=self._alias(vpc))
            self._did(f"retag {name} for {vpc.vpc_id}")
        if not link.up:
            self._ipr.link("set", index=link.index, state="up")
            self._did(f"set {name} up")
        return link

    def _configure_new(self, name: str, vpc: _Vpc) -> _Link:
        """Tag a link we just created as ours and give it no IPv6 address (before up)."""
        index = self._ipr.link_lookup(ifname=name)[0]
        self._ipr.link("set", index=index, ifalias=self._alias(vpc))
        self._ipr.link(
            "set",
            index=index,
            IFLA_AF_SPEC={"attrs": [["AF_INET6", {"attrs": [["IFLA_INET6_ADDR_GEN_MODE", 1]]}]]},
        )
        return self._links()[name]

    def _vxlan_matches(self, link: _Link, vni: int, underlay: _Link) -> bool:
        d = link.data
        return (
            link.kind == "vxlan"
            and d.get("IFLA_VXLAN_ID") == vni
            and d.get("IFLA_VXLAN_LOCAL") == str(self.underlay_ip)
            and d.get("IFLA_VXLAN_PORT") == self.vxlan_port
            and d.get("IFLA_VXLAN_LEARNING") == 0
            and d.get("IFLA_VXLAN_LINK") == underlay.index
        )

    def _ensure_vxlan(
        self, vni: int, vpc: _Vpc, links: dict[str, _Link], bridge: _Link, underlay: _Link
    ) -> _Link:
        name = vxlan_name(vni)
        link = links.get(name)
        if link is not None and not self._vxlan_matches(link, vni, underlay):
            self._ipr.link("del", index=link.index)
            self._did(f"delete {name} (parameters changed)")
            link = None
        if link is None:
            self._ipr.link(
                "add",
                ifname=name,
                kind="vxlan",
                vxlan_id=vni,
                vxlan_local=str(self.underlay_ip),
                vxlan_port=self.vxlan_port,
                vxlan_learning=0,
                vxlan_link=underlay.index,
                mtu=underlay.mtu - VXLAN_OVERHEAD,
            )
            self._did(f"create {name}")
            link = self._configure_new(name, vpc)
        elif link.alias != self._alias(vpc):
            self._ipr.link("set", index=link.index, ifalias=self._alias(vpc))
            self._did(f"retag {name} for {vpc.vpc_id}")
        if link.mtu != underlay.mtu - VXLAN_OVERHEAD:
            self._ipr.link("set", index=link.index, mtu=underlay.mtu - VXLAN_OVERHEAD)
            self._did(f"set {name} mtu {underlay.mtu - VXLAN_OVERHEAD}")
        if link.master != bridge.index:
            self._ipr.link("set", index=link.index, master=bridge.index)
            self._did(f"attach {name} to {bridge.name}")
        if not link.up:
            self._ipr.link("set", index=link.index, state="up")
            self._did(f"set {name} up")
        return link

    def _ensure_flood_list(self, vxlan: _Link, remotes: set[IPv4Address]) -> None:
        current = self._flood_list(vxlan.index)
        for ip in sorted(remotes - current):
            self._ipr.fdb("append", ifindex=vxlan.index, lladdr=ZERO_MAC, dst=str(ip))
            self._did(f"flood {vxlan.name} to {ip}")
        for ip in sorted(current - remotes):
            self._ipr.fdb("del", ifindex=vxlan.index, lladdr=ZERO_MAC, dst=str(ip))
            self._did(f"stop flooding {vxlan.name} to {ip}")

    def _ensure_pinned(
        self, bridge: _Link, vxlan: _Link, ports: dict[str, int], vteps: dict[str, IPv4Address]
    ) -> None:
        """Static bridge entries MAC -> port, and VXLAN entries MAC -> VTEP, exactly."""
        static: dict[str, int] = {}
        tunnel: dict[str, IPv4Address] = {}
        for entry in self._ipr.fdb("dump"):
            mac = entry.get_attr("NDA_LLADDR")
            if not mac or mac == ZERO_MAC:
                continue
            if entry.get_attr("NDA_MASTER") == bridge.index and entry["state"] == NUD_NOARP:
                static[mac] = entry["ifindex"]
            elif entry["ifindex"] == vxlan.index and entry["flags"] & NTF_SELF:
                dst = entry.get_attr("NDA_DST")
                if dst:
                    tunnel[mac] = IPv4Address(dst)
        for mac in sorted(set(tunnel) - set(vteps)):
            self._ipr.fdb(
                "del", ifindex=vxlan.index, lladdr=mac, dst=str(tunnel[mac]), flags=NTF_SELF
            )
            self._did(f"unpin {mac} from {vxlan.name}")
        for mac in sorted(set(static) - set(ports)):
            self._ipr.fdb(
                "del", ifindex=static[mac], lladdr=mac, master=bridge.index, flags=NTF_MASTER
            )
            self._did(f"unpin {mac} from {bridge.name}")
        for mac, vtep in sorted(vteps.items()):
            if tunnel.get(mac) != vtep:
                self._ipr.fdb(
                    "replace",
                    ifindex=vxlan.index,
                    lladdr=mac,
                    dst=str(vtep),
                    flags=NTF_SELF,
                    state=NUD_PERMANENT,
                )
                self._did(f"pin {mac} to {vtep} on {vxlan.name}")
        for mac, index in sorted(ports.items()):
            if static.get(mac) != index:
                self._ipr.fdb(
                    "replace",
                    ifindex=index,
                    lladdr=mac,
                    master=bridge.index,
                    flags=NTF_MASTER,
                    state=NUD_NOARP,
                )
                self._did(f"pin {mac} to port {index} of {bridge.name}")
