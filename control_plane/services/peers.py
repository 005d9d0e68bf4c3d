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
"""

from __future__ import annotations

from dataclasses import dataclass

from control_plane.domain.compute import Instance
from control_plane.domain.host import Host
from control_plane.domain.lifecycle import InstanceState
from control_plane.domain.network import NetworkInterface
from control_plane.store import Store

_TEARDOWN = frozenset({InstanceState.TERMINATING, InstanceState.TERMINATED})


@dataclass(frozen=True, slots=True)
class Peers:
    #: VPC name -> underlay addresses of the other hosts carrying it
    addresses: dict[str, list[str]]
    #: the records the answer was computed from (VPCs, interfaces, instances, hosts)
    read: frozenset[str]


async def vpc_peers(store: Store, inst: Instance, vpcs: set[str], *, revision: int) -> Peers:
    tenant_nics, _ = await store.list_all(
        NetworkInterface, parent=f"tenants/{inst.tenant}", revision=revision
    )
    watched = set(vpcs)
    members: dict[str, set[str]] = {}  # other instance -> the VPCs it has NICs in
    for nic in tenant_nics:
        vpc = nic.vpc_name
        if vpc in vpcs:
            watched.add(nic.name)
            if nic.instance and nic.instance != inst.name:
                members.setdefault(nic.instance, set()).add(vpc)
    candidates = sorted(members)
    live = {
        other.name: other.host
        for other in await store.get_many(Instance, candidates, revision=revision)
        if other is not None
        and other.host
        and other.host != inst.host
        and other.state not in _TEARDOWN
    }
    host_names = sorted(set(live.values()))
    watched.update(candidates, host_names)
    addresses: dict[str, set[str]] = {vpc: set() for vpc in vpcs}
    for host in await store.get_many(Host, host_names, revision=revision):
        # the host must still be bound to the instance (not released since)
        if host is None or not host.underlay_address:
            continue
        if live.get(host.assigned_instance) == host.name:
            for vpc in members[host.assigned_instance]:
                addresses[vpc].add(host.underlay_address)
    return Peers({vpc: sorted(addrs) for vpc, addrs in addresses.items()}, frozenset(watched))
