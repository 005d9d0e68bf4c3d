"""Step 3b, NICs: an ``offload-net`` per NIC, its TAP in the VPC's bridge.

For every desired NIC the agent writes the instance's metadata (served by
the back-end at 169.254.169.254; owner-only, ``host_agent.files``),
starts (or adopts) the NIC's back-end in the host's network namespace, and
records its VPC port: the VPC's bridge, VNI and the underlay addresses of
the other hosts carrying it.  Then the fabric is reconciled once for all
ports.  A host without an
``underlay_address`` cannot join a VPC: the instance fails with that reason.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

from host_agent.desired import DesiredInstance, DesiredNic
from host_agent.devices import NetSpec
from host_agent.files import write_private
from host_agent.power.base import Nic
from host_agent.reconcile.context import Context
from host_agent.reconcile.errors import ProvisionFailed
from host_agent.reconcile.names import nic_id, short_id, tap_name
from offload.network.fabric import VpcPort


async def nics(ctx: Context, inst: DesiredInstance) -> dict[str, Nic]:
    """NIC name -> its served NIC, in the fabric (idempotent)."""
    if not ctx.config.devices:
        return {n.name: Nic(id=n.name, socket=Path(), mac=n.mac) for n in inst.nics}
    if not inst.nics:
        return {}
    if not ctx.config.underlay_address:
        raise ProvisionFailed("this host has no underlay_address: it cannot join a VPC")
    out: dict[str, Nic] = {}
    for nic in inst.nics:
        out[nic.name] = await _serve(ctx, inst, nic)
    await ctx.fabric.reconcile()
    return out


async def _serve(ctx: Context, inst: DesiredInstance, nic: DesiredNic) -> Nic:
    ident = nic_id(nic.name)
    prefix = ipaddress.ip_network(nic.subnet_cidr, strict=False).prefixlen
    meta = ctx.instance_dir(inst.name) / f"{ident}.json"
    write_private(  # the tenant's user data and keys: 0600 in a 0700 directory
        meta,
        json.dumps(
            {
                "instance_id": inst.id,
                "hostname": inst.hostname or inst.id,
                "public_keys": list(inst.ssh_keys),
                "user_data": inst.user_data,
            }
        ).encode(),
    )
    spec = NetSpec(
        id=nic.name,
        socket=ctx.socket_path(inst.name, ident),
        tap=tap_name(nic.name),
        mac=nic.mac,
        ip=f"{nic.private_ip}/{prefix}" if nic.private_ip else "",
        gateway=nic.gateway_ip,
        metadata=meta,
        mtu=ctx.config.nic_mtu,
        netns=ctx.config.netns,
    )
    await ctx.start_backend(spec)
    ctx.fabric.add(
        nic.name,
        VpcPort(
            vpc_id=short_id(nic.vpc)[:12],
            vni=nic.vni,
            tap=spec.tap,
            remotes=tuple(ipaddress.IPv4Address(a) for a in nic.peers),
        ),
    )
    return Nic(id=ident, socket=spec.socket, mac=nic.mac)
