"""Anti-spoofing for the IPv6 a guest transmits: which frames may leave the NIC.

``Ipv6Guard.check(payload)`` returns ``None`` for a packet that may go on,
or the reason it is dropped (the label of its counter).  The NIC's
addresses are the ones it was given (``--ipv6``) plus its link-local
address, fe80::/64 with the EUI-64 of its MAC; a NIC given no IPv6 address
has no IPv6 at all (not even link-local), so every IPv6 packet is dropped
as ``ipv6_disabled``.  Otherwise, in this order:

1. the packet does not parse (``ipv6.parse_ipv6``)           ipv6_malformed
2. the source is neither the unspecified address (::) nor one of the
   NIC's addresses                                            ipv6_src
3. from ::, only what RFC 4861/3810 send before an address is valid:
   router solicitation, neighbour solicitation (DAD) and MLD reports;
   anything else                                              ipv6_src
4. Neighbor Discovery (ICMPv6 133..137):
   - in a fragmented packet (hosts ignore those, RFC 6980)    ndp_fragmented
   - malformed (``ipv6.parse_nd``)                            ipv6_malformed
   - a router advertisement or redirect: a guest is no router  ndp_router
   - a link-layer address option that is not the NIC's MAC    ndp_lladdr
   - an advertisement whose target is not one of the NIC's
     addresses, or a DAD solicitation (from ::) for an address
     that is not the NIC's                                    ndp_target
5. everything else from a NIC's address goes on.

A solicitation from a valid source may ask for anyone's address (that is
what it is for); what would poison a neighbour's cache is the link-layer
option, which is checked.  A non-first fragment carries no upper-layer
header; its source was checked, and the first fragment decided the rest.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv6Address

from offload.network import ipv6 as v6

__all__ = ["REASONS", "Ipv6Guard"]

#: every reason ``check`` returns
REASONS = (
    "ipv6_disabled",
    "ipv6_malformed",
    "ipv6_src",
    "ndp_fragmented",
    "ndp_router",
    "ndp_lladdr",
    "ndp_target",
)
_UNSPECIFIED = bytes(16)
_MLD_REPORTS = frozenset({131, 143})
_FROM_UNSPECIFIED = frozenset({v6.ICMPV6_RS, v6.ICMPV6_NS}) | _MLD_REPORTS


class Ipv6Guard:
    """The IPv6 check of one NIC (immutable, so safe from any thread)."""

    def __init__(self, mac: bytes, addresses: Iterable[IPv6Address]) -> None:
        given = {a.packed for a in addresses}
        self.mac = mac
        self.enabled = bool(given)
        self.addresses = frozenset(given | {v6.link_local(mac)}) if given else frozenset()

    def check(self, payload: bytes) -> str | None:
        """``None`` if the IPv6 packet in *payload* may leave the NIC, else the drop reason."""
        if not self.enabled:
            return "ipv6_disabled"
        pkt = v6.parse_ipv6(payload)
        if pkt is None:
            return "ipv6_malformed"
        unspecified = pkt.src == _UNSPECIFIED
        if not unspecified and pkt.src not in self.addresses:
            return "ipv6_src"
        icmp_type = pkt.payload[0] if pkt.proto == v6.IPPROTO_ICMPV6 and pkt.payload else None
        if unspecified and icmp_type not in _FROM_UNSPECIFIED:
            return "ipv6_src"
        if icmp_type not in v6.ND_TYPES:
            return None
        if pkt.fragmented:
            return "ndp_fragmented"
        nd = v6.parse_nd(pkt.payload)
        if nd is None:
            return "ipv6_malformed"
        if nd.type in (v6.ICMPV6_RA, v6.ICMPV6_REDIRECT):
            return "ndp_router"
        if any(lladdr != self.mac for lladdr in nd.lladdrs):
            return "ndp_lladdr"
        dad = unspecified and nd.type == v6.ICMPV6_NS
        if (nd.type == v6.ICMPV6_NA or dad) and nd.target not in self.addresses:
            return "ndp_target"
        return None
