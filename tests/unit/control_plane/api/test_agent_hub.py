"""``AgentHub`` bookkeeping without etcd: one subscription per stream."""

from __future__ import annotations

from typing import cast

from control_plane.api.agent_hub import AgentHub
from control_plane.store import Store


def _hub() -> AgentHub:
    return AgentHub(cast(Store, object()))  # the watches are not started


def test_two_streams_of_one_host_are_woken_and_closed_independently() -> None:
    hub = _hub()
    old, new = hub.subscribe("h1"), hub.subscribe("h1")
    assert old.event.is_set() and new.event.is_set()  # first computation at once
    for sub in (old, new):
        sub.event.clear()
        hub.rebind(sub, ["tenants/t/instances/i"])
    hub.unsubscribe(new)
    assert hub.streams("h1") == 1
    hub._wake_host("h1")
    assert old.event.is_set() and not new.event.is_set()
    old.event.clear()
    hub._wake_bound("tenants/t/instances/i")  # the old stream's binding survived
    assert old.event.is_set()
    hub.unsubscribe(old)
    assert hub.streams("h1") == 0
    assert not hub._bound and not hub._names


def test_rebind_wakes_for_a_change_during_the_computation() -> None:
    hub = _hub()
    sub = hub.subscribe("h1")
    sub.event.clear()
    since = hub.mark()
    hub._wake_bound("tenants/t/volumes/v")  # changed while the stream computed
    hub.rebind(sub, ["tenants/t/instances/i", "tenants/t/volumes/v"], since=since)
    assert sub.event.is_set()
    sub.event.clear()
    hub.rebind(sub, ["tenants/t/instances/i"], since=hub.mark())
    assert not sub.event.is_set()
