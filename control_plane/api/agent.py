"""``AgentService``: the host agent's Register and Connect stream.

The credential names the host (``<host-id>.<secret>``); every ``host``
field an agent sends must name that host, otherwise PERMISSION_DENIED (the
stream ends).  An instance status or console tail is applied only when it
names the instance bound to the host now (``Host.assigned_instance``); any
other instance -- one just terminated, or one bound to another host since a
failover -- is dropped and counted (``bmaas_cp_agent_stale_messages_total``),
never applied and never an error: the agent cannot know yet, and a stream
closed for it would reconnect into the same report.  So an agent can never
change what another host's instance looks like.

``Register`` moves a freshly ENROLLED host to CLEANING (``provide``: its
agent wipes it before its first tenant; the host controller makes it
AVAILABLE on the wipe report) and returns the heartbeat interval.
``Connect`` runs two tasks per stream:

- the reader applies agent messages: a heartbeat keeps the host alive
  (``store.liveness``: the replica's one lease; no etcd write after the
  session's first, and none to the host record, so the scheduler's CAS is
  not disturbed), instance and host statuses are merged into the host's
  ``AgentReport`` that controllers converge on (one CAS txn from the report
  the stream wrote last; with the action generation the agent echoes: see
  ``agent.proto``), console tails go to ``store.consoles`` (flushed in
  batches once a second).  Whether a status names the bound instance is
  answered by the stream's last desired state when it does, else by
  reading the host.  A status or console tail about an instance no
  longer bound to the host (just terminated: the agent had not heard yet)
  is dropped and counted, never an error: it must not close the stream;
- the pusher computes the host's desired state (host record, bound
  instance, its image, volumes, NICs with subnet/VPC and the VPC's VXLAN
  peers: the underlay addresses of the other hosts with a live instance in
  the VPC, ``services.peers``) whenever the ``AgentHub`` wakes it (a watched change of the host,
  its instance, or a record its peers were computed from) and at least every
  ``desired_resync`` seconds (+-25 % jitter per wait), and sends it when it differs from
  the last one sent - level-triggered: each DesiredState replaces the
  previous one, and the first is sent as soon as the stream opens.  Every
  record of one computation is read at ONE etcd revision, which becomes
  ``DesiredState.generation``: one generation, one snapshot.

Either task ending (agent hung up, bad message, replica shutting down) ends
the stream; the agent reconnects, possibly to another replica.  The pusher
also ends it (PERMISSION_DENIED) when the host's credential is no longer
the one the stream was opened with (decommissioned: cleared; rotated).
With ``--tls-client-ca``, Register and Connect also require the client
certificate to name the credential's host (``Servicer.agent_host``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import random
from collections.abc import AsyncIterator
from typing import Any

from bmaas.v1 import agent_pb2, agent_pb2_grpc, common_pb2
from control_plane import metrics
from control_plane.api import convert, errors, validate
from control_plane.api.base import Servicer
from control_plane.api.errors import InvalidField
from control_plane.api.rpc import Context, unary
from control_plane.domain.agent import AgentReport
from control_plane.domain.compute import Image, Instance
from control_plane.domain.errors import BmaasError, FailedPrecondition, NotFound, PermissionDenied
from control_plane.domain.host import Host
from control_plane.domain.lifecycle import HostEvent, HostState, InstanceState
from control_plane.domain.network import NetworkInterface, Subnet, Vpc
from control_plane.domain.storage import StorageConfig, boot_image, parent_image
from control_plane.domain.transitions import apply_host_event
from control_plane.domain.volume import Volume
from control_plane.services.peers import Neighbor, vpc_peers
from control_plane.store import RevisionCompacted

SERVICE = "AgentService"
MAX_CONSOLE_TAIL = 64 * 1024
DESIRED_RESYNC_SECONDS = 60.0
_POWERED = frozenset(
    {
        InstanceState.SCHEDULED,
        InstanceState.PROVISIONING,
        InstanceState.STARTING,
        InstanceState.RUNNING,
        InstanceState.REBOOTING,
    }
)
_TEARDOWN = frozenset({InstanceState.TERMINATING, InstanceState.TERMINATED})


class StreamState:
    """What one ``Connect`` stream knows: the instance its last desired state
    bound to the host and that instance's image (read again with the host,
    in one round trip, by the next computation), and the report it last wrote (the etag a merge
    compares; a stale one costs one failed txn, never a lost field)."""

    __slots__ = ("bound", "image", "report")

    def __init__(self) -> None:
        self.bound = ""
        self.image = ""
        self.report: AgentReport | None = None


def _own(host_id: str, value: str, field: str) -> None:
    if value and value not in (host_id, f"hosts/{host_id}"):
        raise PermissionDenied(f"{field}: this credential speaks for hosts/{host_id} only")


class AgentServicer(Servicer, agent_pb2_grpc.AgentServiceServicer):
    desired_resync = DESIRED_RESYNC_SECONDS
    #: the region's storage back-end: names RBD images in the desired state
    storage = StorageConfig()

    @unary(SERVICE)
    async def Register(
        self, request: agent_pb2.RegisterRequest, context: Context
    ) -> agent_pb2.RegisterResponse:
        host_id = await self.agent_host(context)
        validate.required(request.host, "host")
        _own(host_id, request.host, "host")
        validate.text(request.agent_version, "agent_version", max_len=64)
        driver = validate.text(request.power_driver, "power_driver", max_len=16)
        underlay = validate.text(request.underlay_address, "underlay_address", max_len=45)
        if underlay:
            try:
                ipaddress.ip_address(underlay)
            except ValueError:
                raise InvalidField("underlay_address", "is not an IP address") from None
        hardware = (
            validate.hardware(request.hardware, "hardware", sizes_optional=True)
            if request.HasField("hardware")
            else None
        )
        now = self.store.clock()

        def provide(h: Host) -> Host:
            if h.state == HostState.DECOMMISSIONED:
                raise PermissionDenied(f"{h.name} is decommissioned")
            if driver and driver != h.power_driver:
                raise FailedPrecondition(
                    f"{h.name} was enrolled with power driver {h.power_driver!r}, "
                    f"but this agent runs {driver!r}"
                )
            found = dataclasses.replace(
                h,
                underlay_address=underlay,
                card_cpus=request.card_cpus,
                hardware=hardware if hardware is not None and hardware.cpus else h.hardware,
            )
            if h.state == HostState.ENROLLED:
                return apply_host_event(found, HostEvent.PROVIDE, now=now)
            return found

        host = await self.store.mutate(Host, f"hosts/{host_id}", provide)
        return agent_pb2.RegisterResponse(
            host=convert.host(host), heartbeat_interval_seconds=self.deps.heartbeat_interval
        )

    async def Connect(
        self, request_iterator: AsyncIterator[agent_pb2.AgentMessage], context: Context
    ) -> AsyncIterator[agent_pb2.ControlMessage]:
        try:
            host_id = await self.agent_host(context)
            admitted = (await self.store.get(Host, f"hosts/{host_id}")).agent_credential_hash
        except BmaasError as exc:
            await errors.abort(context, exc)
        metrics.AGENT_STREAMS.inc()
        outbox: asyncio.Queue[agent_pb2.ControlMessage | BaseException | None] = asyncio.Queue(16)
        state = StreamState()
        reader = asyncio.create_task(self._read(host_id, request_iterator, outbox, state))
        pusher = asyncio.create_task(self._push(host_id, outbox, admitted, state))
        try:
            while True:
                item = await outbox.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    await errors.abort(context, item)
                metrics.DESIRED_STATE_PUSHES.inc()
                yield item
        finally:
            metrics.AGENT_STREAMS.dec()
            for task in (reader, pusher):
                task.cancel()
            for task in (reader, pusher):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _read(
        self,
        host_id: str,
        stream: AsyncIterator[agent_pb2.AgentMessage],
        outbox: asyncio.Queue[agent_pb2.ControlMessage | BaseException | None],
        state: StreamState,
    ) -> None:
        try:
            async for msg in stream:
                await self.handle(host_id, msg, state)
        except BmaasError as exc:
            await outbox.put(exc)
            return
        await outbox.put(None)

    async def handle(
        self, host_id: str, msg: agent_pb2.AgentMessage, stream: StreamState | None = None
    ) -> None:
        """Apply one agent message (validated; raises domain errors).
        *stream* is what the message's stream knows (saves reads)."""
        stream = stream if stream is not None else StreamState()
        kind = msg.WhichOneof("body")
        metrics.AGENT_MESSAGES.labels(kind or "empty").inc()
        if kind == "heartbeat":
            _own(host_id, msg.heartbeat.host, "heartbeat.host")
            await self.store.liveness.heartbeat(host_id, ttl=self.deps.heartbeat_ttl)
        elif kind == "instance_status":
            st = msg.instance_status
            validate.name(st.instance, "instance_status.instance", "instances")
            validate.text(st.message, "instance_status.message", max_len=4096)
            phase = convert.agent_phase(st.phase)
            if phase is None:
                raise InvalidField("instance_status.phase", "is not an observable phase")
            if not await self._bound(host_id, st.instance, stream):
                return
            stream.report = await self.store.reports.merge(
                host_id,
                lambda prev: dataclasses.replace(
                    prev,
                    instance=st.instance,
                    instance_phase=phase,
                    generation=st.generation,
                    message=st.message,
                ),
                known=stream.report,
            )
        elif kind == "console":
            con = msg.console
            validate.name(con.instance, "console.instance", "instances")
            if len(con.tail) > MAX_CONSOLE_TAIL:
                raise InvalidField("console.tail", f"is longer than {MAX_CONSOLE_TAIL} bytes")
            if await self._bound(host_id, con.instance, stream):
                self.store.consoles.offer(con.instance, con.tail)
        elif kind == "host_status":
            st_h = msg.host_status
            _own(host_id, st_h.host, "host_status.host")
            validate.text(st_h.message, "host_status.message", max_len=4096)
            stream.report = await self.store.reports.merge(
                host_id,
                lambda prev: dataclasses.replace(
                    prev,
                    wiped_epoch=max(prev.wiped_epoch, st_h.wiped_epoch),
                    message=st_h.message or prev.message,
                ),
                known=stream.report,
            )
        else:
            raise InvalidField("body", "an AgentMessage must carry one body")

    async def _bound(self, host_id: str, instance: str, stream: StreamState) -> bool:
        """Whether *instance* is bound to the host; counts the stale message if
        not.  The binding the stream's last desired state was computed from
        answers without a read when it names *instance* (the agent learnt of
        the instance from that computation or a later one); otherwise the host
        is read."""
        if instance and instance == stream.bound:
            return True
        host = await self.store.get(Host, f"hosts/{host_id}")
        if instance == host.assigned_instance:
            return True
        metrics.AGENT_STALE_MESSAGES.inc()
        return False

    async def _push(
        self,
        host_id: str,
        outbox: asyncio.Queue[agent_pb2.ControlMessage | BaseException | None],
        admitted: str,
        state: StreamState,
    ) -> None:
        last = b""
        hub = self.deps.hub
        sub = hub.subscribe(host_id)
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    # jittered: streams opened together do not resync together
                    await asyncio.wait_for(
                        sub.event.wait(), self.desired_resync * random.uniform(0.75, 1.25)
                    )
                sub.event.clear()
                since = hub.mark()
                await self._still_admitted(host_id, admitted)
                desired = await self.desired_state(host_id, state)
                # the served records, and with them what their VXLAN peers
                # were computed from (noted by ``_desired_instance``)
                hub.rebind(
                    sub,
                    [
                        name
                        for inst in desired.instances
                        for name in (inst.instance, *(vol.volume for vol in inst.volumes))
                    ],
                    since=since,
                )
                bound = desired.instances[0].instance if desired.instances else ""
                if state.bound and state.bound != bound:
                    self.store.consoles.discard(state.bound)  # a late tail must not outlive it
                state.bound = bound
                # the image outlives its instance: the next one likely boots it too
                state.image = desired.instances[0].image if desired.instances else state.image
                generation = desired.generation
                desired.generation = 0
                fingerprint = desired.SerializeToString(deterministic=True)
                if fingerprint != last:
                    last = fingerprint
                    desired.generation = generation
                    await outbox.put(agent_pb2.ControlMessage(desired_state=desired))
        except BmaasError as exc:
            await outbox.put(exc)
        finally:
            hub.unsubscribe(sub)

    async def _still_admitted(self, host_id: str, admitted: str) -> None:
        """PERMISSION_DENIED (ending the stream) once the credential the
        stream was opened with is no longer the host's: rotated, or cleared
        by a decommission.  The hub wakes the stream on every change of the
        host record, so this happens within the watch's latency."""
        host = await self.store.get(Host, f"hosts/{host_id}")
        if host.agent_credential_hash != admitted:
            why = "decommissioned" if host.state == HostState.DECOMMISSIONED else "rotated"
            raise PermissionDenied(f"{host.name}: the agent's credential was {why}")

    async def desired_state(
        self, host_id: str, stream: StreamState | None = None
    ) -> agent_pb2.DesiredState:
        """The host's desired state, every record of it read at ONE etcd
        revision -- the message's generation.  So one generation names one
        snapshot: two different messages never carry the same generation,
        and a later message carries a higher one."""
        for _ in range(3):
            try:
                return await self._desired_at(host_id, stream or StreamState())
            except RevisionCompacted:
                continue  # compacted while computing: read a fresh snapshot
        return await self._desired_at(host_id, stream or StreamState())

    async def _desired_at(self, host_id: str, stream: StreamState) -> agent_pb2.DesiredState:
        # one round trip in the steady state: the host, and the instance and
        # image the stream's last computation found, read at one revision;
        # what the host no longer matches is read again at that revision
        wanted: list[tuple[type[Any], str]] = [(Host, f"hosts/{host_id}")]
        if stream.image:
            wanted.append((Image, stream.image))
            if stream.bound:
                wanted.append((Instance, stream.bound))
        got, rev = await self.store.get_snapshot(wanted)
        host = got[0]
        if host is None:
            raise NotFound(f"hosts/{host_id} not found")
        desired = agent_pb2.DesiredState(
            host=host.name,
            generation=rev,
            state=convert.host_state(host.state),
            clean=host.state == HostState.CLEANING,
            cleaning_epoch=host.cleaning_epoch,
        )
        if host.assigned_instance:
            image: Image | None = got[1] if len(got) > 1 else None
            inst: Instance | None = got[2] if len(got) > 2 else None
            try:
                if inst is None or inst.name != host.assigned_instance:
                    inst = await self.store.get(Instance, host.assigned_instance, revision=rev)
                if image is None or image.name != inst.image:
                    image = await self.store.get(Image, inst.image, revision=rev)
            except NotFound:
                return desired
            desired.instances.append(await self._desired_instance(inst, image, rev))
        return desired

    async def _desired_instance(
        self, inst: Instance, image: Image, rev: int
    ) -> agent_pb2.DesiredInstance:
        """*inst*'s part of the desired state, read at revision *rev*."""
        out = agent_pb2.DesiredInstance(
            instance=inst.name,
            tenant=inst.tenant,
            power=common_pb2.POWER_STATE_ON
            if inst.state in _POWERED
            else common_pb2.POWER_STATE_OFF,
            state=convert.instance_state(inst.state),
            terminate=inst.state in _TEARDOWN,
            image=image.name,
            image_source_uri=image.source,
            image_checksum=image.checksum,
            generation=inst.generation,
            user_data=inst.user_data,
            ssh_keys=list(inst.ssh_keys),
            hostname=inst.id,
            metadata_tokens=convert.metadata_tokens(inst.metadata_tokens),
        )
        rbd = self.storage.rbd
        out.volumes.append(
            agent_pb2.DesiredVolume(
                volume=f"{inst.name}/boot",
                size_gib=image.size_gib,
                boot=True,
                source_image=image.name,
                rbd_image=boot_image(inst.tenant, inst.id) if rbd else "",
                rbd_parent=parent_image(image.id) if rbd else "",
            )
        )
        for vname in inst.volumes:
            with contextlib.suppress(NotFound):
                out.volumes.append(
                    convert.desired_volume(
                        await self.store.get(Volume, vname, revision=rev), boot=False, rbd=rbd
                    )
                )
        nics: list[tuple[NetworkInterface, Subnet, Vpc]] = []
        for nname in inst.network_interfaces:
            with contextlib.suppress(NotFound):
                nic = await self.store.get(NetworkInterface, nname, revision=rev)
                subnet = await self.store.get(Subnet, nic.subnet, revision=rev)
                vpc_rec = await self.store.get(Vpc, subnet.vpc_name, revision=rev)
                nics.append((nic, subnet, vpc_rec))
        peers: dict[str, list[str]] = {}
        neighbors: dict[str, list[Neighbor]] = {}
        if nics:
            found = await vpc_peers(
                self.store, inst, {vpc.name for _, _, vpc in nics}, revision=rev
            )
            # a peer appearing or going away must wake this stream (``AgentHub.rebind``)
            self.deps.hub.note_dependencies(inst.name, found.read)
            peers = found.addresses
            neighbors = found.neighbors
        for nic, subnet, vpc in nics:
            gateway = str(next(ipaddress.ip_network(subnet.cidr).hosts()))
            out.nics.append(
                agent_pb2.DesiredNic(
                    network_interface=nic.name,
                    mac_address=nic.mac,
                    private_ip=nic.ip_address,
                    subnet_cidr=subnet.cidr,
                    gateway_ip=gateway,
                    vni=vpc.vni,
                    vpc=vpc.name,
                    peer_underlay_addresses=peers.get(vpc.name, ()),
                    neighbors=[
                        agent_pb2.VpcNeighbor(
                            mac_address=nb.mac,
                            private_ip=nb.ip,
                            subnet_cidr=nb.subnet_cidr,
                            underlay_address=nb.underlay_address,
                            hostname=nb.hostname,
                        )
                        for nb in neighbors.get(vpc.name, ())
                    ],
                )
            )
        return out
