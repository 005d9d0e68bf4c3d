"""The ``Reconciler`` without a data plane: the fake power driver, plain
``Desired`` objects in, the reports it sends collected in a list.

``devices_=False`` skips images, disks and back-ends, so what is left is the
power logic (generations), teardown, cleaning, the state file and report
de-duplication."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from host_agent.config import AgentConfig
from host_agent.desired import Desired, DesiredInstance, Phase, Power
from host_agent.power.base import Disk
from host_agent.power.fake import FakePower
from host_agent.reconcile import (
    ConsoleReport,
    HostReport,
    InstanceReport,
    Reconciler,
    Report,
    short_id,
)

NAME = "instances/i-1"


@pytest.fixture
def config(tmp_path: Path) -> AgentConfig:
    return AgentConfig(
        host_id="host-1",
        endpoints=("127.0.0.1:1",),
        credential="host-1.secret",
        state_dir=tmp_path / "state",
        power_driver="fake",
        devices_=False,
        run_dir_=tmp_path / "run",
    )


class Agent:
    """A Reconciler with the drivers it made and the reports it sent."""

    def __init__(self, config: AgentConfig) -> None:
        self.drivers: dict[Path, FakePower] = {}
        self.reports: list[Report] = []
        self.r = Reconciler(config, driver_factory=self._factory, report=self.reports.append)

    def _factory(self, workdir: Path) -> FakePower:
        driver = self.drivers[workdir] = FakePower(workdir)
        return driver

    def driver(self, name: str = NAME) -> FakePower:
        return self.drivers[self.r.instance_dir(name)]

    async def apply(self, desired: Desired) -> list[Report]:
        """Converge on *desired*; the reports this run sent."""
        start = len(self.reports)
        self.r.set_desired(desired)
        await self.r.converge()
        return self.reports[start:]


def desired(*instances: DesiredInstance, **kwargs: object) -> Desired:
    return Desired(host="hosts/host-1", instances=instances, **kwargs)  # type: ignore[arg-type]


def instance(generation: int, **kwargs: object) -> DesiredInstance:
    return DesiredInstance(name=NAME, generation=generation, **kwargs)  # type: ignore[arg-type]


def phases(reports: list[Report]) -> list[tuple[Phase, int]]:
    return [(r.phase, r.generation) for r in reports if isinstance(r, InstanceReport)]


def of_type(reports: list[Report], kind: type) -> list[Report]:
    return [r for r in reports if isinstance(r, kind)]


def state_file(config: AgentConfig) -> dict[str, object]:
    raw: dict[str, object] = json.loads((config.state_dir / "agent.json").read_text())
    return raw


@pytest.fixture
def agent(config: AgentConfig) -> Agent:
    return Agent(config)


async def test_nothing_desired_yet_does_nothing(agent: Agent, config: AgentConfig) -> None:
    await agent.r.converge()
    assert agent.reports == []
    assert agent.drivers == {}
    assert not (config.state_dir / "agent.json").exists()


async def test_first_instance_provisions_and_powers_on(agent: Agent, config: AgentConfig) -> None:
    reports = await agent.apply(desired(instance(1), generation=10))
    assert phases(reports) == [
        (Phase.PROVISIONING, 1),
        (Phase.STARTING, 1),
        (Phase.RUNNING, 1),
    ]
    assert agent.driver().boots == 1
    assert await agent.driver().state() == Power.ON
    console = of_type(reports, ConsoleReport)
    assert len(console) == 1
    assert b"power on i-1" in console[0].tail  # type: ignore[union-attr]
    assert of_type(reports, HostReport) == [HostReport(0)]
    assert agent.r.applied_generation == 10
    assert agent.r.state.instances[NAME].generation == 1
    assert state_file(config)["instances"] == {
        NAME: {"name": NAME, "generation": 1, "failed": "", "attached": [], "nics": []}
    }


async def test_first_instance_desired_off_is_not_powered_on(agent: Agent) -> None:
    reports = await agent.apply(desired(instance(1, power=Power.OFF)))
    assert phases(reports) == [(Phase.PROVISIONING, 1), (Phase.STOPPED, 1)]
    assert agent.driver().boots == 0
    assert agent.r.state.instances[NAME].generation == 1


async def test_same_generation_again_changes_nothing(agent: Agent) -> None:
    await agent.apply(desired(instance(1), generation=1))
    reports = await agent.apply(desired(instance(1), generation=2))
    assert reports == []  # nothing changed, nothing re-sent
    assert agent.driver().boots == 1
    assert agent.r.applied_generation == 2


async def test_same_generation_does_not_undo_a_power_off_by_the_server(agent: Agent) -> None:
    await agent.apply(desired(instance(1)))
    await agent.driver().power_off()  # the OS shut itself down
    reports = await agent.apply(desired(instance(1)))
    assert phases(reports) == [(Phase.STOPPED, 1)]
    assert agent.driver().boots == 1


async def test_higher_generation_power_off_stops(agent: Agent) -> None:
    await agent.apply(desired(instance(1)))
    reports = await agent.apply(desired(instance(2, power=Power.OFF)))
    assert phases(reports) == [(Phase.STOPPED, 2)]
    assert await agent.driver().state() == Power.OFF
    assert agent.r.state.instances[NAME].generation == 2
    assert b"power off" in agent.driver().console_tail(4096)


async def test_higher_generation_power_on_starts_again(agent: Agent) -> None:
    await agent.apply(desired(instance(1)))
    await agent.apply(desired(instance(2, power=Power.OFF)))
    reports = await agent.apply(desired(instance(3)))
    assert phases(reports) == [(Phase.STARTING, 3), (Phase.RUNNING, 3)]
    assert agent.driver().boots == 2


async def test_rebooting_with_higher_generation_resets(agent: Agent) -> None:
    await agent.apply(desired(instance(1)))
    reports = await agent.apply(desired(instance(2, state="REBOOTING")))
    assert agent.driver().boots == 2
    assert b"reset" in agent.driver().console_tail(4096)
    assert phases(reports) == [(Phase.RUNNING, 2)]  # no STARTING: it never went off
    assert await agent.driver().state() == Power.ON
    # the same REBOOTING generation again does not reset a second time
    await agent.apply(desired(instance(2, state="REBOOTING")))
    assert agent.driver().boots == 2


async def test_a_guest_that_crashed_is_failed_with_its_reason_never_running(
    agent: Agent,
) -> None:
    await agent.apply(desired(instance(1)))
    agent.driver().crash("the guest panicked: Kernel panic - not syncing: test")
    reports = await agent.apply(desired(instance(1)))
    failed = of_type(reports, InstanceReport)
    assert failed == [
        InstanceReport(
            NAME, Phase.FAILED, 1, "the guest panicked: Kernel panic - not syncing: test"
        )
    ]
    # every later run says the same, and nothing else, while the guest is dead
    assert of_type(await agent.apply(desired(instance(1))), InstanceReport) == []
    agent.r.resend()
    assert phases(await agent.apply(desired(instance(1)))) == [(Phase.FAILED, 1)]


async def test_a_failed_guest_keeps_its_server_and_a_reboot_recovers_it(agent: Agent) -> None:
    await agent.apply(desired(instance(1)))
    driver = agent.driver()
    driver.crash("the guest panicked")
    await agent.apply(desired(instance(1)))
    # the control plane marks it FAILED: the server, its disks and record stay
    reports = await agent.apply(desired(instance(1, state="FAILED")))
    assert await driver.state() == Power.ON
    assert agent.driver() is driver
    assert agent.r.instance_dir(NAME).exists()
    assert agent.r.state.instances[NAME].failed == ""
    assert of_type(reports, InstanceReport) == []  # FAILED was sent already
    # the tenant reboots it: a reset, and RUNNING again
    reports = await agent.apply(desired(instance(2, state="REBOOTING")))
    assert driver.boots == 2
    assert phases(reports) == [(Phase.RUNNING, 2)]
    assert (await driver.health()).ok


async def test_a_server_that_died_is_failed_not_stopped_and_a_reboot_powers_it_on(
    agent: Agent,
) -> None:
    await agent.apply(desired(instance(1)))
    driver = agent.driver()
    driver.die("the server's QEMU was killed by SIGSEGV")
    reports = await agent.apply(desired(instance(1)))
    assert of_type(reports, InstanceReport) == [
        InstanceReport(NAME, Phase.FAILED, 1, "the server's QEMU was killed by SIGSEGV")
    ]
    await agent.apply(desired(instance(1, state="FAILED")))
    assert agent.driver() is driver and await driver.state() == Power.OFF
    reports = await agent.apply(desired(instance(2, state="REBOOTING")))
    assert phases(reports) == [(Phase.STARTING, 2), (Phase.RUNNING, 2)]
    assert driver.boots == 2


async def test_a_server_that_powered_itself_off_is_stopped(agent: Agent) -> None:
    await agent.apply(desired(instance(1)))
    await agent.driver().power_off()
    assert phases(await agent.apply(desired(instance(1)))) == [(Phase.STOPPED, 1)]


async def test_a_provisioning_failure_is_still_torn_down_when_failed(
    agent: Agent, config: AgentConfig
) -> None:
    await agent.apply(desired(instance(1)))
    agent.r.state.instances[NAME].failed = "image checksum mismatch"
    reports = await agent.apply(desired(instance(1, state="FAILED")))
    assert await agent.drivers[agent.r.instance_dir(NAME)].state() == Power.OFF
    assert not agent.r.instance_dir(NAME).exists()
    assert of_type(reports, InstanceReport) == [
        InstanceReport(NAME, Phase.FAILED, 1, "image checksum mismatch")
    ]


async def test_instance_no_longer_desired_is_torn_down(agent: Agent, config: AgentConfig) -> None:
    await agent.apply(desired(instance(1)))
    driver = agent.driver()
    workdir = agent.r.instance_dir(NAME)
    assert (workdir / "fake-power").read_text() == "on"
    reports = await agent.apply(desired())
    assert await driver.state() == Power.OFF
    assert NAME not in agent.r.state.instances
    assert state_file(config)["instances"] == {}
    assert not workdir.exists()
    assert of_type(reports, InstanceReport) == []
    assert NAME not in agent.r.timeline


async def test_clean_after_teardown_reports_and_persists_the_epoch(
    agent: Agent, config: AgentConfig
) -> None:
    await agent.apply(desired(instance(1)))
    reports = await agent.apply(desired(clean=True, cleaning_epoch=3))
    assert of_type(reports, HostReport) == [HostReport(3)]
    assert agent.r.state.wiped_epoch == 3
    assert state_file(config)["wiped_epoch"] == 3
    # a restarted agent remembers it
    again = Agent(config)
    assert again.r.state.wiped_epoch == 3
    reports = await again.apply(desired(clean=True, cleaning_epoch=3))
    assert reports == [HostReport(3)]


async def test_clean_with_an_old_epoch_is_not_redone(agent: Agent) -> None:
    await agent.apply(desired(clean=True, cleaning_epoch=5))
    reports = await agent.apply(desired(clean=True, cleaning_epoch=4))
    assert agent.r.state.wiped_epoch == 5
    assert reports == []  # HostReport(5) was sent already


async def test_no_clean_while_an_instance_is_present(agent: Agent, config: AgentConfig) -> None:
    await agent.apply(desired(instance(1)))
    reports = await agent.apply(desired(instance(1), clean=True, cleaning_epoch=3))
    assert reports == []  # HostReport(0) was sent already; nothing new
    assert agent.r.state.wiped_epoch == 0
    assert state_file(config)["wiped_epoch"] == 0
    assert agent.driver().boots == 1
    assert await agent.driver().state() == Power.ON
    # once the instance is gone, the same desired cleaning happens
    reports = await agent.apply(desired(clean=True, cleaning_epoch=3))
    assert of_type(reports, HostReport) == [HostReport(3)]


async def test_no_clean_in_the_pass_that_brings_a_new_instance(
    agent: Agent, config: AgentConfig
) -> None:
    """A desired state with ``clean`` and an instance the agent has not seen
    yet does not wipe (nor report the epoch) while that instance is set up."""
    reports = await agent.apply(desired(instance(1), clean=True, cleaning_epoch=3))
    assert agent.driver().boots == 1
    assert of_type(reports, HostReport) == [HostReport(0)]
    assert agent.r.state.wiped_epoch == 0


async def test_terminating_instance_is_powered_off_but_kept_until_gone(agent: Agent) -> None:
    await agent.apply(desired(instance(1)))
    driver = agent.driver()
    reports = await agent.apply(desired(instance(2, terminate=True), clean=True, cleaning_epoch=1))
    assert await driver.state() == Power.OFF
    assert NAME in agent.r.state.instances  # the record stays while it is listed
    assert agent.r.state.wiped_epoch == 0  # so no cleaning yet
    assert of_type(reports, InstanceReport) == []
    reports = await agent.apply(desired(clean=True, cleaning_epoch=1))
    assert agent.r.state.wiped_epoch == 1
    assert reports == [HostReport(1)]


async def test_duplicates_are_suppressed_and_resend_sends_again(agent: Agent) -> None:
    first = await agent.apply(desired(instance(1)))
    assert await agent.apply(desired(instance(1))) == []
    agent.r.resend()
    again = await agent.apply(desired(instance(1)))
    # everything current once more: the observed phase, the console, the host
    assert phases(again) == [(Phase.RUNNING, 1)]
    assert len(of_type(again, ConsoleReport)) == 1
    assert of_type(again, ConsoleReport) == of_type(first, ConsoleReport)
    assert of_type(again, HostReport) == [HostReport(0)]
    assert agent.driver().boots == 1
    assert await agent.apply(desired(instance(1))) == []


async def test_console_change_is_reported(agent: Agent) -> None:
    await agent.apply(desired(instance(1)))
    # anything that prints on the console
    await agent.driver().attach_disk(Disk(id="x", socket=Path()))
    reports = await agent.apply(desired(instance(1)))
    assert len(of_type(reports, ConsoleReport)) == 1
    assert b"attach x" in of_type(reports, ConsoleReport)[0].tail  # type: ignore[union-attr]


async def test_restart_adopts_and_does_not_power_on_again(config: AgentConfig) -> None:
    first = Agent(config)
    await first.apply(desired(instance(4)))
    assert first.driver().boots == 1

    restarted = Agent(config)
    assert restarted.r.state.instances[NAME].generation == 4
    await restarted.r.adopt()
    reports = await restarted.apply(desired(instance(4)))
    assert restarted.driver().boots == 0
    assert await restarted.driver().state() == Power.ON
    assert phases(reports) == [(Phase.RUNNING, 4)]  # no PROVISIONING, no STARTING


async def test_restart_then_higher_generation_acts(config: AgentConfig) -> None:
    first = Agent(config)
    await first.apply(desired(instance(1)))
    restarted = Agent(config)
    await restarted.r.adopt()
    reports = await restarted.apply(desired(instance(2, power=Power.OFF)))
    assert phases(reports) == [(Phase.STOPPED, 2)]
    assert (restarted.r.instance_dir(NAME) / "fake-power").read_text() == "off"


def test_instance_dirs_are_per_instance(agent: Agent, config: AgentConfig) -> None:
    path: Callable[[str], Path] = agent.r.instance_dir
    assert path(NAME) == config.state_dir / "instances" / short_id(NAME)
    assert path(NAME) != path("instances/i-2")
