"""The control plane's scrape-time collectors: the census (hosts and
instances by state, oldest transient instance; nothing from a follower) and
the controllers' queue depths and leader gauges."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from control_plane import metrics
from control_plane.domain.compute import Instance
from control_plane.domain.host import HardwareProfile, Host
from control_plane.domain.lifecycle import HostState, InstanceState


class FakeStore:
    def __init__(self, instances: list[Instance]) -> None:
        self.instances = instances

    async def list_all(self, cls: type, *, parent: str = "") -> tuple[list[Any], int]:
        assert cls is Instance
        return self.instances, 1


def inst(i: int, state: InstanceState, written: float) -> Instance:
    return Instance(
        tenant="t", id=f"i{i}", instance_type="x", image="y", state=state, update_time=written
    )


def host(i: int, state: HostState) -> Host:
    hardware = HardwareProfile(cpus=1, memory_gib=1)
    return Host(id=f"h{i}", zone="z", rack="r", host_class="c", hardware=hardware, state=state)


def exposition(collector: Any) -> str:
    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(registry).decode()


def test_census_counts_by_state_and_ages_transients() -> None:
    store = FakeStore(
        [
            inst(1, InstanceState.RUNNING, 100.0),
            inst(2, InstanceState.RUNNING, 100.0),
            inst(3, InstanceState.PROVISIONING, 900.0),
            inst(4, InstanceState.PROVISIONING, 400.0),
        ]
    )
    hosts = [host(1, HostState.ALLOCATED), host(2, HostState.UNREACHABLE)]
    census = metrics.Census(store, lambda: hosts, clock=lambda: 1000.0)  # type: ignore[arg-type]
    asyncio.run(census.count())
    text = exposition(census)
    assert 'bmaas_cp_instances{state="RUNNING"} 2.0' in text
    assert 'bmaas_cp_instances{state="FAILED"} 0.0' in text
    assert 'bmaas_cp_hosts{state="UNREACHABLE"} 1.0' in text
    assert 'bmaas_cp_hosts{state="AVAILABLE"} 0.0' in text
    assert 'bmaas_cp_instance_oldest_transient_seconds{state="PROVISIONING"} 600.0' in text
    assert 'bmaas_cp_instance_oldest_transient_seconds{state="STARTING"} 0.0' in text
    assert 'bmaas_cp_instance_oldest_transient_seconds{state="RUNNING"}' not in text


def test_census_of_a_follower_exports_no_samples() -> None:
    census = metrics.Census(FakeStore([inst(1, InstanceState.RUNNING, 1.0)]), lambda: None)  # type: ignore[arg-type]
    asyncio.run(census.count())
    text = exposition(census)
    assert "# TYPE bmaas_cp_instances gauge" in text
    assert "bmaas_cp_instances{" not in text and "bmaas_cp_hosts{" not in text


@dataclasses.dataclass
class Queue:
    depth: int
    pending: int

    def __len__(self) -> int:
        return self.depth


@dataclasses.dataclass
class Ctl:
    name: str
    queue: Queue


@dataclasses.dataclass
class Elector:
    is_leader: bool
    terms: int


@dataclasses.dataclass
class Manager:
    elector: Elector
    controllers: list[Ctl]


def test_controllers_collector_reads_queues_and_leader_seat() -> None:
    manager = Manager(Elector(True, 3), [Ctl("instances", Queue(5, 7))])
    text = exposition(metrics._Controllers(manager))
    assert "bmaas_cp_leader 1.0" in text
    assert "bmaas_cp_leader_terms_total 3.0" in text
    assert 'bmaas_cp_controller_queue_depth{controller="instances"} 5.0' in text
    assert 'bmaas_cp_controller_queue_pending{controller="instances"} 7.0' in text
    manager.elector.is_leader, manager.controllers = False, []
    text = exposition(metrics._Controllers(manager))
    assert "bmaas_cp_leader 0.0" in text and "controller=" not in text
