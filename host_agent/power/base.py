"""The ``PowerDriver`` contract: how the agent drives its physical server.

One driver object per server (the instance's working directory holds its
state, so a restarted agent re-adopts what is running).  The agent calls:

- ``power_on(machine)``: boot the server with the devices in *machine*
  (their back-ends are already serving); no-op when it is on.
- ``power_off(grace=...)``: ask the OS to shut down, wait up to *grace*
  seconds, then cut power; no-op when it is off.
- ``reboot()``: a hard reset (the server stays on).
- ``state()``: ON or OFF as observed now (a server that powered itself off
  is OFF).
- ``health()``: whether the guest of a server that is ON runs
  (``host_agent.power.health``): a panicked guest or a CPU stopped on an
  internal error is ON but not healthy, and the reason says why; a server
  that is OFF because it died (not because it powered off) is not healthy
  either.  A reboot (reset, or power-on) recovers it.  Drivers that cannot
  tell report healthy.
- ``console_tail(limit)``: the newest bytes of the serial console.
- ``attach_disk`` / ``detach_disk``, ``attach_nic`` / ``detach_nic``:
  hot-plug of a vhost-user-blk disk or a virtio-net NIC (on a vhost-user
  netdev) into the running server.
- ``adopt()``: find a server left running by a previous agent process.

``on_change``, when the agent sets it, is called when the driver learns
without being asked that the server's state may have changed (a QMP
``STOP``, ``SHUTDOWN`` or ``GUEST_PANICKED`` event): the agent then runs its
reconciler at once instead of at the next resync.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from host_agent.desired import Power
from host_agent.power.health import HEALTHY, Health


class PowerError(Exception):
    """A power action failed (the message says which and why)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Disk:
    id: str
    socket: Path
    queues: int = 1
    boot: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Nic:
    id: str
    socket: Path
    mac: str
    queues: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Machine:
    """The server as it should boot: CPU, RAM and the card's devices."""

    name: str
    cpus: int = 1
    memory_mib: int = 512
    disks: tuple[Disk, ...] = ()
    nics: tuple[Nic, ...] = ()


class PowerDriver(abc.ABC):
    #: the name operators see (``Host.power_driver``)
    kind: str = ""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.on_change: Callable[[], None] | None = None

    @abc.abstractmethod
    async def adopt(self) -> bool:
        """Re-attach to a server left running; True if one was found."""

    @abc.abstractmethod
    async def power_on(self, machine: Machine) -> None: ...

    @abc.abstractmethod
    async def power_off(self, *, grace: float = 0.0) -> None: ...

    @abc.abstractmethod
    async def reboot(self) -> None: ...

    @abc.abstractmethod
    async def state(self) -> Power: ...

    async def health(self) -> Health:
        """Whether the guest runs, or why not (see the module docstring)."""
        return HEALTHY

    @abc.abstractmethod
    def console_tail(self, limit: int) -> bytes: ...

    @abc.abstractmethod
    async def attach_disk(self, disk: Disk) -> None: ...

    @abc.abstractmethod
    async def detach_disk(self, disk_id: str) -> None: ...

    @abc.abstractmethod
    async def attach_nic(self, nic: Nic) -> None: ...

    @abc.abstractmethod
    async def detach_nic(self, nic_id: str) -> None: ...

    @abc.abstractmethod
    def attached_disks(self) -> set[str]:
        """Ids of the disks and NICs the running server has (empty when off)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Let go of the server without changing its power (agent shutdown)."""
