"""VXLAN peers: which other hosts carry an instance's VPCs.

For an instance with interfaces in *vpcs*, the peers of each VPC are the
underlay addresses of the OTHER hosts bound to a live (not tearing down)
instance of the tenant with an interface in that VPC; sorted, no
duplicates, no empty address.  Read at one etcd revision (the desired
state's), in three round trips whatever the number of NICs: one range read
of the tenant's interfaces, one multi-get of the instances attached to the
VPCs' interfaces and one of their hosts.  ``Peers.read`` names every record
the answer was computed from, so a caller can watch them (a peer appearing
or going away changes the answer).

The same reads give the VPC directory (``Peers.neighbors``): for each VPC,
every addressed interface attached to a live instance bound to a host with
an underlay address, this instance's own included, with its subnet's CIDR
(one more multi-get, of the subnets) and its host's underlay address.  The
card routes between the VPC's subnets and answers DNS from it; the fabric
pins each remote MAC to its host's VTEP.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from control_plane.domain.compute import Instance
from control_plane.domain.host import Host
from control_plane.domain.lifecycle import InstanceState
from control_plane.domain.network import NetworkInterface, Subnet
from control_plane.store import Store

_TEARDOWN = frozenset({InstanceState.TERMINATING, InstanceState.TERMINATED})


@dataclass(frozen=True, slots=True)
class Neighbor:
    """One interface of a VPC, where it lives (its host's VTEP)."""

    mac: str
    ip: str
    subnet_cidr: str
    underlay_address: str
    hostname: str


@dataclass(frozen=True, slots=True)
class Peers:
    #: VPC name -> underlay addresses of the other hosts carrying it
    addresses: dict[str, list[str]]
    #: the records the answer was computed from (VPCs, interfaces, instances, hosts)
    read: frozenset[str]
    #: VPC name -> its addressed interfaces on live instances, sorted by address
    neighbors: dict[str, list[Neighbor]] = field(default_factory=dict)


async def vpc_peers(store: Store, inst: Instance, vpcs: set[str], *, revision: int) -> Peers:
    tenant_nics, _ = await store.list_all(
        NetworkInterface, parent=f"tenants/{inst.tenant}", revision=revision
    )
    watched = set(vpcs)
    members: dict[str, set[str]] = {}  # other instance -> the VPCs it has NICs in
    vpc_nics: list[NetworkInterface] = []
    for nic in tenant_nics:
        vpc = nic.vpc_name
        if vpc in vpcs:
            watched.add(nic.name)
            if nic.instance:
                vpc_nics.append(nic)
            if nic.instance and nic.instance != inst.name:
                members.setdefault(nic.instance, set()).add(vpc)
    candidates = sorted(members)
    live = {
        other.name: other.host
        for other in await store.get_many(Instance, candidates, revision=revision)
        if other is not None and other.host and other.state not in _TEARDOWN
    }
    if inst.host:
        live[inst.name] = inst.host
    host_names = sorted(set(live.values()))
    watched.update(candidates, host_names)
    addresses: dict[str, set[str]] = {vpc: set() for vpc in vpcs}
    underlay: dict[str, str] = {}  # instance -> the underlay address of its host
    for host in await store.get_many(Host, host_names, revision=revision):
        # the host must still be bound to the instance (not released since)
        if host is None or not host.underlay_address:
            continue
        if live.get(host.assigned_instance) == host.name:
            underlay[host.assigned_instance] = host.underlay_address
            if host.name != inst.host:
                for vpc in members[host.assigned_instance]:
                    addresses[vpc].add(host.underlay_address)
    routed = [n for n in vpc_nics if n.ip_address and n.instance in underlay]
    subnet_names = sorted({n.subnet for n in routed})
    watched.update(subnet_names)
    cidrs = {
        s.name: s.cidr
        for s in await store.get_many(Subnet, subnet_names, revision=revision)
        if s is not None
    }
    neighbors: dict[str, list[Neighbor]] = {vpc: [] for vpc in vpcs}
    for n in routed:
        if n.subnet in cidrs:
            neighbors[n.vpc_name].append(
                Neighbor(
                    mac=n.mac,
                    ip=n.ip_address,
                    subnet_cidr=cidrs[n.subnet],
                    underlay_address=underlay[n.instance],
                    hostname=n.instance.rsplit("/", 1)[-1],
                )
            )
    for found in neighbors.values():
        found.sort(key=lambda nb: ipaddress.IPv4Address(nb.ip))
    return Peers(
        {vpc: sorted(addrs) for vpc, addrs in addresses.items()}, frozenset(watched), neighbors
    )
