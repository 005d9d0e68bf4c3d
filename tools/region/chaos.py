"""A workload that survives faults, and the check of what it left in etcd
(the chaos test and ``bench/chaos.py``).

- ``Workload``: tenant workers, each bound to one replica, looping create ->
  RUNNING -> terminate -> TERMINATED through the tenant API, recording every
  call's outcome per replica (``Timeline``) so availability can be measured;
- ``read_history`` / ``check_history``: every revision under ``/bmaas/v1/`` read back from
  etcd's history (a watch from revision 1 up to a marker it writes) and checked for the invariants:
  no host held by two instances, no state change the lifecycle tables have
  no path for, quota usage equal to the live instances; ``transient`` lists
  the instances left in a transient state.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TypeVar

import aetcd
import grpc

from bmaas.v1 import common_pb2, tenant_pb2, tenant_pb2_grpc
from bmaas_tls import ClientTls, aio_channel
from control_plane.domain.compute import Instance
from control_plane.domain.host import Host
from control_plane.domain.lifecycle import (
    HOST_TRANSITIONS,
    INSTANCE_COUNTS_FOR_QUOTA,
    INSTANCE_HOLDS_HOST,
    INSTANCE_STABLE,
    INSTANCE_TRANSITIONS,
)
from control_plane.store import codec
from tools.region.control_plane import bearer
from tools.region.pki import default_pki

T = TypeVar("T")

ROOT = b"/bmaas/v1/"
#: the marker ``read_history`` writes (outside ``ROOT``: nothing else reads it)
END = b"/bmaas-chaos/history-end"
#: client channel options: reconnect to a restarted replica within a second
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


@dataclass
class Timeline:
    """Outcomes of one replica's calls: (monotonic time, ok)."""

    calls: list[tuple[float, bool]] = field(default_factory=list)

    def add(self, ok: bool) -> None:
        self.calls.append((time.monotonic(), ok))

    def window(self, start: float, end: float) -> list[tuple[float, bool]]:
        return [c for c in self.calls if start <= c[0] < end]

    def error_rate(self, start: float, end: float) -> float:
        calls = self.window(start, end)
        return sum(1 for _, ok in calls if not ok) / len(calls) if calls else 0.0

    def longest_unavailability(self, start: float, end: float) -> float:
        """Longest stretch between a failed call and the next good one."""
        longest, failing_since = 0.0, None
        for t, ok in self.window(start, end):
            if not ok and failing_since is None:
                failing_since = t
            elif ok and failing_since is not None:
                longest = max(longest, t - failing_since)
                failing_since = None
        if failing_since is not None:
            longest = max(longest, end - failing_since)
        return longest


class Workload:
    """*workers* tenants loops over the replicas at *ports* (worker i uses port i % n)."""

    def __init__(self, ports: list[int], *, tenant: str, token: str, itype: str, image: str,
                 workers: int = 4, tls: ClientTls | None = None) -> None:  # fmt: skip
        self.ports = ports
        self.tls = tls if tls is not None else default_pki().client_tls()
        self.tenant, self.md = tenant, bearer(token)
        self.itype, self.image = itype, image
        self.workers = workers
        self.timelines = {p: Timeline() for p in ports}
        self.cycles = 0
        self.created: set[str] = set()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._channels: list[grpc.aio.Channel] = []

    def start(self) -> None:
        for i in range(self.workers):
            port = self.ports[i % len(self.ports)]
            ch = aio_channel(f"127.0.0.1:{port}", self.tls, options=CHANNEL_OPTIONS)
            self._channels.append(ch)
            stub = tenant_pb2_grpc.TenantServiceStub(ch)
            self._tasks.append(asyncio.create_task(self._worker(stub, port)))

    async def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), 30)
        for t in self._tasks:
            t.cancel()
        for ch in self._channels:
            await ch.close()

    async def _call(self, port: int, coro: Awaitable[T]) -> T | None:
        try:
            out = await coro
        except grpc.aio.AioRpcError as exc:
            # UNAVAILABLE / DEADLINE_EXCEEDED: the replica could not serve; other
            # codes (no capacity while hosts clean, a lost race) are answers
            bad = exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
            self.timelines[port].add(not bad)
            return None
        self.timelines[port].add(True)
        return out

    async def _until(self, stub: tenant_pb2_grpc.TenantServiceStub, port: int, name: str,
                     state: int, timeout: float = 60) -> bool:  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = await self._call(
                port,
                stub.GetInstance(tenant_pb2.GetRequest(name=name), metadata=self.md, timeout=2),
            )
            if got is not None and got.state == state:
                return True
            await asyncio.sleep(0.2)
        return False

    async def _worker(self, stub: tenant_pb2_grpc.TenantServiceStub, port: int) -> None:
        while not self._stop.is_set():
            req = tenant_pb2.CreateInstanceRequest(
                request_id=str(uuid.uuid4()),
                instance=common_pb2.Instance(
                    name=f"{self.tenant}/instances/c{uuid.uuid4().hex[:8]}",
                    instance_type=self.itype,
                    image=self.image,
                ),
            )
            inst = None
            while inst is None and not self._stop.is_set():
                # the same request_id: a retried create is idempotent
                inst = await self._call(port, stub.CreateInstance(req, metadata=self.md, timeout=3))
                if inst is None:
                    await asyncio.sleep(0.2)
            if inst is None:
                return
            self.created.add(inst.name)
            await self._until(stub, port, inst.name, common_pb2.INSTANCE_STATE_RUNNING)
            action = tenant_pb2.InstanceActionRequest(name=inst.name)
            for _ in range(300):
                call = stub.TerminateInstance(action, metadata=self.md, timeout=3)
                if await self._call(port, call) is not None:
                    break
                await asyncio.sleep(0.2)
            await self._until(stub, port, inst.name, common_pb2.INSTANCE_STATE_TERMINATED)
            self.cycles += 1


# -- etcd history ----------------------------------------------------------------------------


@dataclass
class Violations:
    double_allocations: list[str] = field(default_factory=list)
    bad_transitions: list[str] = field(default_factory=list)
    quota: list[str] = field(default_factory=list)
    revisions: int = 0

    @property
    def all(self) -> list[str]:
        return [*self.double_allocations, *self.bad_transitions, *self.quota]


def _reachable(table: object) -> set[tuple[object, object]]:
    """(from, to) pairs joined by a path in a lifecycle table: a controller may
    apply several events of one agent report in one write (PROVISIONING ->
    RUNNING), never a move the table has no path for (TERMINATED -> RUNNING)."""
    assert hasattr(table, "items")
    step: dict[object, set[object]] = {s: set(evs.values()) for s, evs in table.items()}
    pairs: set[tuple[object, object]] = set()
    for start in step:
        seen, todo = set(), [start]
        while todo:
            for nxt in step.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        pairs |= {(start, t) for t in seen}
    return pairs


async def read_history(client: aetcd.Client) -> list[tuple[int, bool, bytes, bytes]]:
    """Every event under ``ROOT`` from revision 1 up to now: (revision,
    deleted, key, value), every transaction whole.

    ``END`` is written first; the watch (of every key under ``/``) stops at
    its event.  etcd delivers a revision's events (one txn's writes) all
    before any event of a later revision, so each txn before the marker
    arrives complete.  Stopping instead at the first event of the head
    revision, as known before the watch, cuts that txn in two: a
    termination's txn puts the instance TERMINATED before the ``released/``
    counter, so the replay would see the instance gone but its slot still
    charged."""
    put = await client.kvstub.Put(aetcd.rpc.PutRequest(key=END, value=b""), timeout=10)
    end = int(put.header.revision)
    events: list[tuple[int, bool, bytes, bytes]] = []
    watch = await client.watch(b"/", range_end=b"0", start_revision=1)
    try:
        async for ev in watch:
            if ev.kv.mod_revision >= end:
                break
            if ev.kv.key.startswith(ROOT):
                kind = ev.kind == aetcd.EventKind.DELETE
                events.append((ev.kv.mod_revision, kind, ev.kv.key, ev.kv.value))
    finally:
        await watch.cancel()
    return events


def check_history(events: list[tuple[int, bool, bytes, bytes]]) -> Violations:
    out = Violations(revisions=len({e[0] for e in events}))
    inst_edges = _reachable(INSTANCE_TRANSITIONS)
    host_edges = _reachable(HOST_TRANSITIONS)
    same = {(s, s) for s in (*INSTANCE_TRANSITIONS, *HOST_TRANSITIONS)}
    instances: dict[bytes, Instance] = {}
    hosts: dict[bytes, Host] = {}
    holder: dict[str, str] = {}  # host name -> instance holding it
    usage: dict[str, dict[str, int]] = defaultdict(dict)
    released: dict[str, dict[str, int]] = defaultdict(dict)
    for rev, deleted, key, value in events:
        rel = key[len(ROOT) :].decode()
        kind = rel.split("/", 1)[0]
        if kind == "instances":
            old = instances.get(key)
            if deleted:
                instances.pop(key, None)
                continue
            new = codec.decode(Instance, value, etag=str(rev))
            if old is not None and (old.state, new.state) not in inst_edges | same:
                out.bad_transitions.append(f"@{rev} {new.name}: {old.state} -> {new.state}")
            instances[key] = new
        elif kind == "hosts":
            old_h = hosts.get(key)
            if deleted:
                hosts.pop(key, None)
                continue
            h = codec.decode(Host, value, etag=str(rev))
            if old_h is not None and (old_h.state, h.state) not in host_edges | same:
                out.bad_transitions.append(f"@{rev} {h.name}: {old_h.state} -> {h.state}")
            hosts[key] = h
        elif kind in ("usage", "released"):
            tenant = rel.split("/", 1)[1]
            target = usage if kind == "usage" else released
            target[tenant] = {} if deleted else json.loads(value)
        # after each event: no host held by two live instances
        holder.clear()
        for inst in instances.values():
            host = inst.host
            if host and inst.state in INSTANCE_HOLDS_HOST:
                prev = holder.setdefault(host, inst.name)
                if prev != inst.name:
                    msg = f"@{rev} {host} held by {prev} and {inst.name}"
                    if msg not in out.double_allocations:
                        out.double_allocations.append(msg)
    live: dict[str, int] = defaultdict(int)
    for inst in instances.values():
        if inst.state in INSTANCE_COUNTS_FOR_QUOTA:
            live[inst.name.split("/instances/")[0].removeprefix("tenants/")] += 1
    for tenant in set(usage) | set(live):
        charged = int(usage[tenant].get("instances", 0)) - int(released[tenant].get("instances", 0))
        if charged != live[tenant]:
            out.quota.append(f"{tenant}: usage {charged} != {live[tenant]} live instances")
    return out


def transient(events: list[tuple[int, bool, bytes, bytes]]) -> list[str]:
    """Instances whose last recorded state is transient."""
    last: dict[bytes, Instance | None] = {}
    for rev, deleted, key, value in events:
        if key.startswith(ROOT + b"instances/"):
            last[key] = None if deleted else codec.decode(Instance, value, etag=str(rev))
    return [f"{i.name}: {i.state}" for i in last.values() if i and i.state not in INSTANCE_STABLE]
