"""The ``fake`` power driver: no server at all.

For control-plane scale tests and benchmarks: thousands of agents in one
process speak the real ``AgentService`` protocol while their "servers" are
a power flag and a set of disk ids.  ``crash(reason)`` plays a guest that
died with the server still on (a panic), ``die(reason)`` a server that
died under its guest: ``health()`` says so until a reset or a power-on.
The flag is kept in the working directory so a restarted agent adopts its
fake server like the qemu driver adopts a live QEMU.  The console shows
what happened.
"""

from __future__ import annotations

import time
from pathlib import Path

from host_agent.desired import Power
from host_agent.power.base import Disk, Machine, Nic, PowerDriver
from host_agent.power.health import HEALTHY, Health


class FakePower(PowerDriver):
    kind = "fake"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self._power = Power.OFF
        self._disks: set[str] = set()
        self._console = bytearray()
        self._health = HEALTHY
        self.boots = 0

    def _say(self, line: str) -> None:
        self._console += f"[fake {time.strftime('%H:%M:%S')}] {line}\n".encode()

    def _flag(self) -> Path:
        return self.workdir / "fake-power"

    def _save(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._flag().write_text(self._power.value)

    async def adopt(self) -> bool:
        if self._flag().exists():
            self._power = Power(self._flag().read_text().strip() or "off")
        return self._power == Power.ON

    async def power_on(self, machine: Machine) -> None:
        if self._power == Power.ON:
            return
        self._power = Power.ON
        self._health = HEALTHY
        self._disks = {d.id for d in machine.disks} | {n.id for n in machine.nics}
        self.boots += 1
        self._say(f"power on {machine.name} with disks {sorted(self._disks)}")
        self._save()

    async def power_off(self, *, grace: float = 0.0) -> None:
        if self._power == Power.OFF:
            return
        self._power = Power.OFF
        self._disks = set()
        self._health = HEALTHY
        self._say("power off")
        self._save()

    async def reboot(self) -> None:
        self.boots += 1
        self._health = HEALTHY
        self._say("reset")

    async def state(self) -> Power:
        return self._power

    def crash(self, reason: str) -> None:
        """The guest dies; the server stays on (as after a panic)."""
        self._health = Health(False, reason)
        self._say(f"guest crashed: {reason}")

    def die(self, reason: str) -> None:
        """The server stops under its guest (not a power-off)."""
        self._power = Power.OFF
        self._disks = set()
        self._health = Health(False, reason)
        self._say(f"server died: {reason}")
        self._save()

    async def health(self) -> Health:
        return self._health

    def console_tail(self, limit: int) -> bytes:
        return bytes(self._console[-limit:])

    async def attach_disk(self, disk: Disk) -> None:
        self._disks.add(disk.id)
        self._say(f"attach {disk.id}")

    async def detach_disk(self, disk_id: str) -> None:
        self._disks.discard(disk_id)
        self._say(f"detach {disk_id}")

    async def attach_nic(self, nic: Nic) -> None:
        self._disks.add(nic.id)
        self._say(f"attach nic {nic.id} ({nic.mac})")

    async def detach_nic(self, nic_id: str) -> None:
        self._disks.discard(nic_id)
        self._say(f"detach nic {nic_id}")

    def attached_disks(self) -> set[str]:
        return set(self._disks)
