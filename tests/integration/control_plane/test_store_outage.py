"""The store across an etcd crash: calls fail as ``Unavailable`` (never a raw
gRPC error) while etcd is down, and a watch resumes by itself afterwards
without losing or repeating events."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from control_plane.domain import Tenant
from control_plane.domain.errors import Unavailable
from control_plane.store import Store, WatchEvent
from tools.region.etcd import EtcdServer

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_watch_survives_an_etcd_restart(etcd: EtcdServer) -> None:
    store = await Store.connect(etcd.host, etcd.port, root="/outage", rpc_timeout=2.0)
    try:
        _, rev = await store.list_all(Tenant)
        seen: list[WatchEvent[Tenant]] = []

        async def follow() -> None:
            async with contextlib.aclosing(store.watch(Tenant, start_revision=rev + 1)) as evs:
                async for ev in evs:
                    seen.append(ev)

        task = asyncio.create_task(follow())
        await store.create(Tenant(id="before"))
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.02)

        etcd.kill()
        with pytest.raises(Unavailable):
            await store.get(Tenant, "tenants/before")
        etcd.start()

        for _ in range(100):  # the channel reconnects on its own
            try:
                await store.create(Tenant(id="after"))
                break
            except Unavailable:
                await asyncio.sleep(0.1)
        for _ in range(200):
            if len(seen) >= 2:
                break
            await asyncio.sleep(0.05)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert [e.name for e in seen] == ["tenants/before", "tenants/after"]
    finally:
        await store.aclose()
