"""The chaos check's history reader on a real etcd, written by a real Store:
a termination's txn (instance TERMINATED, then its ``released/`` counter)
that is etcd's newest revision is read whole, so the replayed quota ledger
matches the live instances."""

from __future__ import annotations

import aetcd
import pytest

from control_plane.domain import Instance, InstanceState, Quota, Tenant
from control_plane.domain.lifecycle import InstanceEvent
from control_plane.domain.transitions import apply_instance_event
from control_plane.store import Store
from tools.region.chaos import ROOT, check_history, read_history
from tools.region.etcd import EtcdServer

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_the_head_revisions_txn_is_read_whole(etcd: EtcdServer) -> None:
    store = await Store.connect(etcd.host, etcd.port)
    try:
        await store.create(Tenant(id="acme", quota=Quota(max_instances=2, max_volume_gib=0)))
        inst = await store.create(
            Instance(tenant="acme", id="i1", instance_type="instanceTypes/m1", image="images/d")
        )
        inst = await store.update(apply_instance_event(inst, InstanceEvent.TERMINATE))
        # the last write to etcd: the instance and its released slot, one txn
        done = await store.update(apply_instance_event(inst, InstanceEvent.TERMINATED))
        assert done.state == InstanceState.TERMINATED
        assert (await store.get_usage("acme")).instances == 0
    finally:
        await store.aclose()
    async with aetcd.Client(host=etcd.host, port=etcd.port) as client:
        events = await read_history(client)
        head = int(done.etag)
        assert {key for rev, _, key, _ in events if rev == head} == {
            ROOT + b"instances/acme/i1",
            ROOT + b"released/acme",
        }
        again = await read_history(client)  # the marker of the first read is no event
    assert again == events
    violations = check_history(events)
    assert violations.all == [], violations.all
    assert violations.revisions == len({rev for rev, *_ in events}) >= 4
