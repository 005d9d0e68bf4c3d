"""Step 3b, NICs: an ``offload-net`` per NIC, its TAP in the VPC's bridge.

For every desired NIC the agent writes the instance's metadata (served by
the back-end at 169.254.169.254; owner-only, ``host_agent.files``), starts
(or adopts) the NIC's back-end in the host's network namespace, and records
its VPC port: the VPC's bridge, VNI, the underlay addresses of the other
hosts carrying it, and the VPC's MACs with their hosts' VTEPs (pinned in the
bridge, so nothing the card routes is flooded).  Then the fabric is
reconciled once for all ports.

The VPC directory (every interface of the VPC: address, MAC, subnet,
hostname) goes to the back-end as a file, ``vpc-<nic>.json`` beside the
metadata (``offload-net --vpc-directory``); when the control plane's
directory changes the agent rewrites the file and sends the running
back-end ``SIGHUP``, on which it re-reads it and routes with the new one.
A back-end started now reads the file at start, so it gets no signal.  A
host without an ``underlay_address`` cannot join a VPC: the instance fails
with that reason.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import signal
from pathlib import Path

from host_agent.desired import DesiredInstance, DesiredNic
from host_agent.devices import Backend, NetSpec
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
    directory = ctx.instance_dir(inst.name) / f"vpc-{ident}.json"
    changed = _write_if_changed(directory, _directory(nic))
    spec = NetSpec(
        id=nic.name,
        socket=ctx.socket_path(inst.name, ident),
        tap=tap_name(nic.name),
        mac=nic.mac,
        ip=f"{nic.private_ip}/{prefix}" if nic.private_ip else "",
        gateway=nic.gateway_ip,
        metadata=meta,
        vpc_directory=directory if nic.private_ip else None,
        mtu=ctx.config.nic_mtu,
        netns=ctx.config.netns,
        metadata_tokens=inst.metadata_tokens,
    )
    known = ctx.backends.get(spec.id) or Backend(spec)
    running = known.pid() if await asyncio.to_thread(known.alive) else 0
    backend = await ctx.start_backend(spec)
    if changed and running and backend.pid() == running:
        os.kill(running, signal.SIGHUP)  # re-read the directory
    ctx.fabric.add(
        nic.name,
        VpcPort(
            vpc_id=short_id(nic.vpc)[:12],
            vni=nic.vni,
            tap=spec.tap,
            remotes=tuple(ipaddress.IPv4Address(a) for a in nic.peers),
            mac=nic.mac,
            neighbors=tuple(
                (nb.mac, ipaddress.IPv4Address(nb.underlay_address))
                for nb in nic.neighbors
                if nb.underlay_address
            ),
        ),
    )
    return Nic(id=ident, socket=spec.socket, mac=nic.mac)


def _directory(nic: DesiredNic) -> bytes:
    """The VPC directory file ``offload-net --vpc-directory`` reads."""
    return json.dumps(
        {
            "vpc": nic.vpc.rsplit("/", 1)[-1],
            "neighbors": [
                {"ip": nb.ip, "mac": nb.mac, "subnet": nb.subnet_cidr, "hostname": nb.hostname}
                for nb in nic.neighbors
            ],
        },
        sort_keys=True,
    ).encode()


def _write_if_changed(path: Path, data: bytes) -> bool:
    """Write *data* to *path* (0600, atomically) unless it holds it already; True if written."""
    try:
        if path.read_bytes() == data:
            return False
    except OSError:
        pass
    write_private(path, data)
    return True
