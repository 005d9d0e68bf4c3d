"""Tenant-token records against a real etcd: expiry at issue, revoke and
touch by compare-and-swap (never lost, never backwards), listing per tenant,
and the change feed the replicas' authenticators follow."""

from __future__ import annotations

import asyncio

import pytest

from control_plane.domain import Tenant
from control_plane.domain.errors import NotFound
from control_plane.store import Store
from tests.harness.store import (
    StoreFactory,
    cp_etcd,
    root,
    store,
    store_factory,
)

__all__ = ["cp_etcd", "root", "store", "store_factory"]
pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_issue_list_revoke_touch(store: Store) -> None:
    await store.create(Tenant(id="t1"))
    await store.create(Tenant(id="t2"))
    tokens = store.tenant_tokens
    a = await tokens.issue("t1", "a" * 64, ttl=60)
    b = await tokens.issue("t1", "b" * 64, ttl=3600)
    await tokens.issue("t2", "c" * 64, ttl=60)
    assert a.expire_time == pytest.approx(a.create_time + 60)
    with pytest.raises(NotFound):
        await tokens.issue("ghost", "d" * 64, ttl=60)
    assert [t.id for t in await tokens.list("t1")] == [b.id, a.id]  # newest first
    revoked = await tokens.revoke(a.id)
    assert revoked is not None and revoked.revoke_time > 0
    again = await tokens.revoke(a.id)
    assert again is not None and again.revoke_time == revoked.revoke_time
    assert await tokens.revoke("nosuchtoken") is None
    await tokens.touch(b.id, 1000.0)
    await tokens.touch(b.id, 900.0)  # older: ignored
    stored = await tokens.lookup(b.id)
    assert stored is not None and stored.last_use_time == 1000.0
    assert stored.sha256 == "b" * 64 and stored.revoke_time == 0


async def test_concurrent_touches_and_a_revoke_all_land(store_factory: StoreFactory) -> None:
    s1, s2 = await store_factory(), await store_factory()
    await s1.create(Tenant(id="t1"))
    tok = await s1.tenant_tokens.issue("t1", "a" * 64, ttl=60)
    await asyncio.gather(
        s1.tenant_tokens.touch(tok.id, 10.0),
        s2.tenant_tokens.touch(tok.id, 20.0),
        s1.tenant_tokens.revoke(tok.id),
        s2.tenant_tokens.touch(tok.id, 15.0),
    )
    final = await s2.tenant_tokens.lookup(tok.id)
    assert final is not None and final.revoke_time > 0 and final.last_use_time == 20.0


async def test_changes_name_every_written_token(store: Store) -> None:
    await store.create(Tenant(id="t1"))
    tokens = store.tenant_tokens
    start = await tokens.revision()
    seen: list[str] = []

    async def follow() -> None:
        async for token_id in tokens.changes(start_revision=start + 1):
            seen.append(token_id)

    task = asyncio.create_task(follow())
    try:
        tok = await tokens.issue("t1", "a" * 64, ttl=60)
        await tokens.revoke(tok.id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while len(seen) < 2:
            assert loop.time() < deadline, seen
            await asyncio.sleep(0.01)
        assert seen == [tok.id, tok.id]
    finally:
        task.cancel()


async def test_purge_deletes_only_records_that_ended_before_the_cutoff(store: Store) -> None:
    await store.create(Tenant(id="t1"))
    tokens = store.tenant_tokens
    expired = await tokens.issue("t1", "a" * 64, ttl=1)
    revoked = await tokens.issue("t1", "b" * 64, ttl=3600)
    live = await tokens.issue("t1", "c" * 64, ttl=3600)
    await tokens.revoke(revoked.id)
    cutoff = live.create_time + 600  # after the expiry and the revocation
    assert await tokens.purge(ended_before=cutoff) == 2
    assert [t.id for t in await tokens.list("t1")] == [live.id]
    assert await tokens.purge(ended_before=cutoff) == 0
    assert await tokens.lookup(expired.id) is None
