"""Walk every edge of both lifecycle tables, and every missing one."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from control_plane.domain import Host, Instance, fake_hardware
from control_plane.domain.errors import FailedPrecondition, InvalidTransition
from control_plane.domain.lifecycle import (
    HOST_ALLOCATABLE,
    HOST_DELETE_ALLOWED,
    HOST_TRANSITIONS,
    INSTANCE_DELETE_ALLOWED,
    INSTANCE_STABLE,
    INSTANCE_TARGETS,
    INSTANCE_TRANSIENT,
    INSTANCE_TRANSITIONS,
    HostEvent,
    HostState,
    InstanceEvent,
    InstanceState,
    host_transition,
    instance_transition,
    transition,
)
from control_plane.domain.transitions import apply_host_event, apply_instance_event

HOST_EDGES = [(s, e, n) for s, row in HOST_TRANSITIONS.items() for e, n in row.items()]
INSTANCE_EDGES = [(s, e, n) for s, row in INSTANCE_TRANSITIONS.items() for e, n in row.items()]


def test_tables_cover_every_state() -> None:
    assert set(HOST_TRANSITIONS) == set(HostState)
    assert set(INSTANCE_TRANSITIONS) == set(InstanceState)
    assert set(INSTANCE_TARGETS) == set(InstanceState)


@pytest.mark.parametrize(("state", "event", "expected"), HOST_EDGES)
def test_every_host_edge(state: HostState, event: HostEvent, expected: HostState) -> None:
    assert host_transition(state, event) == expected
    assert transition(state, event) == expected


@pytest.mark.parametrize(("state", "event", "expected"), INSTANCE_EDGES)
def test_every_instance_edge(
    state: InstanceState, event: InstanceEvent, expected: InstanceState
) -> None:
    assert instance_transition(state, event) == expected
    assert transition(state, event) == expected


def test_every_missing_host_edge_raises() -> None:
    missing = 0
    for state, event in itertools.product(HostState, HostEvent):
        if event in HOST_TRANSITIONS[state]:
            continue
        missing += 1
        with pytest.raises(InvalidTransition) as info:
            host_transition(state, event)
        assert info.value.state == state and info.value.event == event
    assert missing == len(HostState) * len(HostEvent) - len(HOST_EDGES)


def test_every_missing_instance_edge_raises() -> None:
    for state, event in itertools.product(InstanceState, InstanceEvent):
        if event not in INSTANCE_TRANSITIONS[state]:
            with pytest.raises(InvalidTransition):
                instance_transition(state, event)


def test_invalid_transition_is_a_failed_precondition() -> None:
    with pytest.raises(FailedPrecondition):
        instance_transition(InstanceState.TERMINATED, InstanceEvent.START)
    with pytest.raises(InvalidTransition):
        transition(HostState.AVAILABLE, InstanceEvent.START)  # type: ignore[call-overload]


def test_no_host_reaches_available_from_a_tenant_without_cleaning() -> None:
    # Every path from ALLOCATED back to AVAILABLE passes through CLEANING.
    frontier, seen = [HostState.ALLOCATED], {HostState.ALLOCATED}
    while frontier:
        state = frontier.pop()
        for nxt in HOST_TRANSITIONS[state].values():
            if nxt == HostState.CLEANING or nxt in seen:
                continue
            assert nxt != HostState.AVAILABLE, f"{state} -> AVAILABLE skips cleaning"
            seen.add(nxt)
            frontier.append(nxt)
    assert HostState.AVAILABLE not in seen
    assert {s for s, row in HOST_TRANSITIONS.items() if HostState.AVAILABLE in row.values()} == {
        HostState.ENROLLED,
        HostState.CLEANING,
    }


def test_groups_are_consistent() -> None:
    assert INSTANCE_TRANSIENT.isdisjoint(INSTANCE_STABLE)
    assert set(InstanceState) == INSTANCE_TRANSIENT | INSTANCE_STABLE
    for state in INSTANCE_STABLE:
        assert INSTANCE_TARGETS[state] == state
    for state in INSTANCE_TRANSIENT:
        assert INSTANCE_TARGETS[state] in INSTANCE_STABLE
    assert INSTANCE_TRANSITIONS[InstanceState.TERMINATED] == {}
    assert HOST_TRANSITIONS[HostState.DECOMMISSIONED] == {}
    assert InstanceState.TERMINATED in INSTANCE_DELETE_ALLOWED
    assert HostState.ALLOCATED not in HOST_DELETE_ALLOWED
    assert {HostState.AVAILABLE} == HOST_ALLOCATABLE


def test_every_transient_state_can_be_terminated_or_finishes_terminating() -> None:
    for state in InstanceState:
        if state in (InstanceState.TERMINATING, InstanceState.TERMINATED):
            continue
        assert INSTANCE_TRANSITIONS[state].get(InstanceEvent.TERMINATE) == (
            InstanceState.TERMINATING
        )


def _instance(state: InstanceState) -> Instance:
    return Instance(
        tenant="t", id="i", instance_type="instanceTypes/m", image="images/d", state=state
    )


def test_apply_instance_event_sets_target_reason_and_generation() -> None:
    running = _instance(InstanceState.RUNNING)
    stopping = apply_instance_event(running, InstanceEvent.STOP)
    assert (stopping.state, stopping.target_state) == (
        InstanceState.STOPPING,
        InstanceState.STOPPED,
    )
    assert stopping.generation == running.generation + 1
    failed = apply_instance_event(stopping, InstanceEvent.FAIL, reason="disk gone")
    assert failed.failure_reason == "disk gone" and failed.target_state == InstanceState.FAILED
    assert failed.generation == stopping.generation


def test_a_failed_instance_is_rebooted_with_a_new_generation_and_no_reason() -> None:
    failed = apply_instance_event(
        _instance(InstanceState.RUNNING), InstanceEvent.FAIL, reason="the guest panicked"
    )
    rebooting = apply_instance_event(failed, InstanceEvent.REBOOT)
    assert (rebooting.state, rebooting.target_state) == (
        InstanceState.REBOOTING,
        InstanceState.RUNNING,
    )
    assert rebooting.generation == failed.generation + 1
    assert rebooting.failure_reason == ""
    # a reboot that fails again records the new reason
    again = apply_instance_event(rebooting, InstanceEvent.FAIL, reason="image gone")
    assert again.failure_reason == "image gone"


def test_apply_host_event_counts_cleaning_epochs() -> None:
    host = Host(
        id="h",
        zone="z",
        rack="r",
        host_class="c",
        hardware=fake_hardware(),
        state=HostState.ALLOCATED,
    )
    cleaning = apply_host_event(host, HostEvent.RELEASE, now=100.0)
    assert cleaning.cleaning_epoch == 1 and cleaning.cleaning_started_time == 100.0
    available = apply_host_event(cleaning, HostEvent.CLEAN_DONE, now=130.0)
    assert available.state == HostState.AVAILABLE and available.last_cleaned_time == 130.0
    again = apply_host_event(
        dataclasses.replace(available, state=HostState.ALLOCATED), HostEvent.RELEASE, now=200.0
    )
    assert again.cleaning_epoch == 2
