"""The agent's link to the control plane: Register, then one Connect stream.

``ControlPlaneLink.run()`` loops forever: pick the next endpoint, call
``Register`` (inventory, underlay address), open ``Connect`` and keep it:

- up: a heartbeat every ``heartbeat_interval_seconds`` (from Register)
  carrying the last applied DesiredState generation, and every report the
  reconciler queues (converted to protobuf here, the only place in the agent
  that sees generated code);
- down: each ``DesiredState`` is converted to ``host_agent.desired`` and
  handed to the reconciler, which converges on its own schedule.

When the stream ends (replica gone, network error) the link backs off
(0.2 s doubling to ``max_backoff``, with jitter), moves to the next
endpoint and starts over; the reconciler keeps running meanwhile, so the
servers and their devices are left alone.  On every new stream the
reconciler is asked to send all its reports again.  A refused credential
(UNAUTHENTICATED / PERMISSION_DENIED) is logged once per change.

Channels speak TLS as ``config.tls`` says (``bmaas_tls``: the region's CA,
the agent's client certificate; plaintext only with ``--insecure``).  A
link owns one channel per session by default.  Many agents in one process
(scale tests, ``bench/control_plane.py``) pass ``SharedChannels`` instead:
every link's Register and Connect stream is multiplexed over one HTTP/2
connection per endpoint (the credential is per-call metadata, so nothing
about a channel is host-specific).  Ten thousand private channels would be
ten thousand TCP connections, HTTP/2 sessions and gRPC-core subchannels on
both ends, a few hundred KiB each.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
from collections.abc import AsyncIterator, Callable

import grpc
from google.protobuf import timestamp_pb2

from bmaas.v1 import agent_pb2, agent_pb2_grpc, common_pb2
from bmaas_tls import ClientTls, aio_channel
from host_agent import metrics
from host_agent.config import AgentConfig
from host_agent.desired import (
    Desired,
    DesiredInstance,
    DesiredNic,
    DesiredVolume,
    Phase,
    Power,
    VpcNeighbor,
)
from host_agent.reports import HostReport, InstanceReport, Report

log = logging.getLogger("host_agent.client")

AGENT_VERSION = "bmaas-agent/0.2"
_PHASES = {
    Phase.PROVISIONING: common_pb2.INSTANCE_STATE_PROVISIONING,
    Phase.STARTING: common_pb2.INSTANCE_STATE_STARTING,
    Phase.RUNNING: common_pb2.INSTANCE_STATE_RUNNING,
    Phase.STOPPED: common_pb2.INSTANCE_STATE_STOPPED,
    Phase.FAILED: common_pb2.INSTANCE_STATE_FAILED,
}


def desired_from_pb(msg: agent_pb2.DesiredState) -> Desired:
    return Desired(
        host=msg.host,
        generation=msg.generation,
        host_state=common_pb2.HostState.Name(msg.state).removeprefix("HOST_STATE_"),
        clean=msg.clean,
        cleaning_epoch=msg.cleaning_epoch,
        instances=tuple(_instance(i) for i in msg.instances),
    )


def _instance(i: agent_pb2.DesiredInstance) -> DesiredInstance:
    return DesiredInstance(
        name=i.instance,
        tenant=i.tenant,
        state=common_pb2.InstanceState.Name(i.state).removeprefix("INSTANCE_STATE_"),
        power=Power.ON if i.power == common_pb2.POWER_STATE_ON else Power.OFF,
        terminate=i.terminate,
        generation=i.generation,
        image=i.image,
        image_uri=i.image_source_uri,
        image_checksum=i.image_checksum,
        metadata_tokens=(
            "optional" if i.metadata_tokens == common_pb2.METADATA_TOKENS_OPTIONAL else "required"
        ),
        volumes=tuple(
            DesiredVolume(
                volume=v.volume,
                size_gib=v.size_gib,
                boot=v.boot,
                source_image=v.source_image,
                max_iops=v.max_iops,
                max_mbps=v.max_mbps,
                rbd_image=v.rbd_image,
                rbd_parent=v.rbd_parent,
            )
            for v in i.volumes
        ),
        nics=tuple(
            DesiredNic(
                name=n.network_interface,
                mac=n.mac_address,
                private_ip=n.private_ip,
                subnet_cidr=n.subnet_cidr,
                gateway_ip=n.gateway_ip,
                vni=n.vni,
                vpc=n.vpc,
                peers=tuple(n.peer_underlay_addresses),
                neighbors=tuple(
                    VpcNeighbor(
                        mac=nb.mac_address,
                        ip=nb.private_ip,
                        subnet_cidr=nb.subnet_cidr,
                        underlay_address=nb.underlay_address,
                        hostname=nb.hostname,
                    )
                    for nb in n.neighbors
                ),
            )
            for n in i.nics
        ),
        hostname=i.hostname,
        user_data=i.user_data,
        ssh_keys=tuple(i.ssh_keys),
    )


def report_to_pb(host: str, report: Report) -> agent_pb2.AgentMessage:
    if isinstance(report, InstanceReport):
        return agent_pb2.AgentMessage(
            instance_status=agent_pb2.InstanceStatus(
                instance=report.instance,
                phase=_PHASES[report.phase],
                message=report.message[:4096],
                generation=report.generation,
            )
        )
    if isinstance(report, HostReport):
        return agent_pb2.AgentMessage(
            host_status=agent_pb2.HostStatus(
                host=host, wiped_epoch=report.wiped_epoch, message=report.message[:4096]
            )
        )
    return agent_pb2.AgentMessage(
        console=agent_pb2.ConsoleTail(instance=report.instance, tail=report.tail[-65536:])
    )


class SharedChannels:
    """One ``grpc.aio`` channel per endpoint, shared by many links.

    Links never close a shared channel (it reconnects by itself when a
    replica comes back); ``aclose()`` closes them all once every link is
    stopped.  The channels speak TLS as *tls* says (the agents' common CA;
    a shared channel carries no client certificate)."""

    def __init__(self, tls: ClientTls) -> None:
        self._tls = tls
        self._channels: dict[str, grpc.aio.Channel] = {}

    def get(self, endpoint: str) -> grpc.aio.Channel:
        channel = self._channels.get(endpoint)
        if channel is None:
            channel = self._channels[endpoint] = aio_channel(endpoint, self._tls)
        return channel

    async def aclose(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close()


class ControlPlaneLink:
    def __init__(
        self,
        config: AgentConfig,
        *,
        on_desired: Callable[[Desired], None],
        on_connect: Callable[[], None],
        applied_generation: Callable[[], int],
        channel_factory: Callable[[str], grpc.aio.Channel] | None = None,
        channels: SharedChannels | None = None,
    ) -> None:
        self.config = config
        self._on_desired = on_desired
        self._on_connect = on_connect
        self._applied = applied_generation
        self._channel_factory = channel_factory or self._channel
        self._shared = channels
        self._outbox: collections.deque[agent_pb2.AgentMessage] = collections.deque()
        self._kick = asyncio.Event()  # set by send() and by the heartbeat timer
        #: bumped per stream: a dead stream's request generator, still parked on
        #: ``_kick``, must not pop (and lose) reports meant for the new one
        self._stream_seq = 0
        self._metadata = (("authorization", f"Bearer {config.credential}"),)
        self.host_name = f"hosts/{config.host_id}"
        self.connected = asyncio.Event()
        self._last_problem = ""
        self.registered: agent_pb2.RegisterResponse | None = None

    def _channel(self, endpoint: str) -> grpc.aio.Channel:
        return aio_channel(endpoint, self.config.tls)

    def send(self, report: Report) -> None:
        """Queue a report for the current (or next) stream."""
        self._outbox.append(report_to_pb(self.host_name, report))
        self._kick.set()

    async def run(self) -> None:
        backoff = 0.2
        index = 0
        while True:
            endpoint = self.config.endpoints[index % len(self.config.endpoints)]
            try:
                await self._session(endpoint)
                backoff = 0.2  # a stream that was up resets the backoff
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as exc:
                self._problem(f"{endpoint}: {exc.code().name}: {exc.details()}")
                if self.connected.is_set():
                    backoff = 0.2
            except Exception as exc:  # a bug or an unexpected transport error
                self._problem(f"{endpoint}: {type(exc).__name__}: {exc}")
            if self.connected.is_set():
                metrics.RECONNECTS.inc()
            self.connected.clear()
            metrics.CONNECTED.set(0)
            index += 1
            await asyncio.sleep(backoff * (0.5 + random.random() / 2))
            backoff = min(backoff * 2, self.config.max_backoff)

    def _problem(self, text: str) -> None:
        """Log a connection problem once per change, not per attempt."""
        if text != self._last_problem:
            log.warning("control plane: %s (retrying)", text)
            self._last_problem = text

    async def _session(self, endpoint: str) -> None:
        if self._shared is not None:
            await self._stream(self._shared.get(endpoint), endpoint)
            return
        async with self._channel_factory(endpoint) as channel:
            await self._stream(channel, endpoint)

    async def _stream(self, channel: grpc.aio.Channel, endpoint: str) -> None:
        """Register, then hold one Connect stream on *channel* until it ends."""
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        self.registered = await stub.Register(
            agent_pb2.RegisterRequest(
                host=self.host_name,
                hardware=common_pb2.HardwareProfile(
                    cpus=self.config.cpus,
                    memory_gib=self.config.memory_gib,
                    disks=[
                        common_pb2.Disk(name=d.name, size_gib=d.size_gib, kind=d.kind)
                        for d in self.config.local_disks
                    ],
                ),
                agent_version=AGENT_VERSION,
                underlay_address=self.config.underlay_address,
                card_cpus=self.config.card_cpus,
                power_driver=self.config.power_driver,
            ),
            metadata=self._metadata,
            timeout=10,
        )
        interval = max(1, self.registered.heartbeat_interval_seconds or 5)
        # drop reports queued for the dead stream: on_connect re-sends the current ones
        self._outbox.clear()
        self._stream_seq += 1
        call = stub.Connect(self._upstream(interval, self._stream_seq), metadata=self._metadata)
        self._on_connect()
        try:
            async for msg in call:
                if not self.connected.is_set():
                    self.connected.set()
                    metrics.CONNECTED.set(1)
                    if self._last_problem:
                        log.info("control plane: connected to %s", endpoint)
                        self._last_problem = ""
                if msg.WhichOneof("body") == "desired_state":
                    self._on_desired(desired_from_pb(msg.desired_state))
        finally:
            call.cancel()  # a shared channel outlives the stream: end it explicitly

    async def _upstream(self, interval: float, seq: int) -> AsyncIterator[agent_pb2.AgentMessage]:
        yield self._heartbeat()
        loop = asyncio.get_running_loop()
        next_beat = loop.time() + interval
        while True:
            if not self._outbox:
                # one timer handle per wait, no task: thousands of agents in
                # one process (scale tests) wait here between heartbeats
                timer = loop.call_at(next_beat, self._kick.set)
                await self._kick.wait()
                timer.cancel()
            if seq != self._stream_seq:
                self._kick.set()  # the current stream's generator may be parked too
                return
            self._kick.clear()
            while self._outbox and seq == self._stream_seq:
                yield self._outbox.popleft()
            if loop.time() >= next_beat:
                yield self._heartbeat()
                next_beat = loop.time() + interval

    def _heartbeat(self) -> agent_pb2.AgentMessage:
        now = timestamp_pb2.Timestamp()
        now.GetCurrentTime()
        return agent_pb2.AgentMessage(
            heartbeat=agent_pb2.Heartbeat(
                host=self.host_name, time=now, applied_generation=self._applied()
            )
        )
