"""The ``qemu`` power driver: a QEMU process stands in for the server.

Powering on starts QEMU (``host_agent.power.qemu.build_argv``: memfd RAM
shared with the card, only vhost-user devices, UEFI firmware booting the
disk marked ``boot``) in its own session, so it outlives the agent; its pid
file and QMP socket let a restarted agent adopt it.  Everything after the
start goes through QMP: ``query-status`` for the guest's health
(``host_agent.power.health``: the server has a ``pvpanic`` device, and a
guest that panicked or a CPU stopped on an internal error is ON but not
healthy), ``system_powerdown`` then ``quit`` for power off, ``system_reset``
(then ``cont`` when the guest had stopped) for a reboot, ``chardev-add`` +
``device_add`` on a free hot-plug root port to plug a disk and
``device_del`` + ``chardev-remove`` to unplug it (a NIC also gets a
``vhost-user`` netdev between its chardev and its device, and
``vectors=0`` when ``query-kvm`` says the server runs under TCG).  The QMP
session stays open, and a ``STOP``, ``SHUTDOWN`` or ``GUEST_PANICKED`` event
calls ``on_change``, so a guest that dies is looked at (and reported) at
once, not at the next resync.  A QEMU that is gone is OFF; unless it shut
down (exit status 0, or ``SHUTDOWN`` on the session before it closed) it
died under the guest, and ``health()`` says how (a signal, an exit status
and its log's last line) until the next power-on.

The accelerator is the one that boots what the server boots, its UEFI
firmware (``host_agent.power.accel.firmware_accelerator``): KVM when OVMF
runs under it on this machine, TCG otherwise.

Files in the instance's working directory: ``qemu.pid``, ``console.log``
(the serial port, appended across power cycles), ``qemu.log`` (QEMU's own
stderr), ``vars.fd`` (the server's UEFI variable store, its NVRAM), and
``devices.json`` (which QEMU device id and hot-plug slot each disk has).
The QMP socket lives in the agent's ``run_dir`` (unix socket paths are
short).

The server's vCPUs are kept off the card's CPUs (the first ``card_cpus`` of
the machine) when the machine has CPUs left for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

from host_agent.config import AgentConfig
from host_agent.desired import Power
from host_agent.devices import pid_alive
from host_agent.power.accel import firmware_accelerator
from host_agent.power.base import Disk, Machine, Nic, PowerDriver, PowerError
from host_agent.power.health import HEALTHY, Health, from_qmp
from host_agent.power.qemu import (
    BlkDisk,
    NetNic,
    ServerSpec,
    UefiFirmware,
    build_argv,
    hotplug_bus,
    net_quirks,
    prepare_firmware,
)
from host_agent.power.qmp import QmpClient, QmpConnectionError, QmpError, QmpEvent

HOTPLUG_SLOTS = 6
#: how long a QMP query may take before the run moves on (QEMU may be wedged)
QMP_QUERY_TIMEOUT = 5.0
#: how long after a power-on or reset the driver watches the CPU: a firmware
#: the accelerator cannot run stops at its first instructions
BOOT_SETTLE_S = 1.0
#: QMP events after which the guest may no longer run (the agent looks at once)
HEALTH_EVENTS = frozenset({"STOP", "SHUTDOWN", "GUEST_PANICKED"})


class QemuPower(PowerDriver):
    kind = "qemu"

    def __init__(self, workdir: Path, config: AgentConfig) -> None:
        super().__init__(workdir)
        self.config = config
        self.pidfile = workdir / "qemu.pid"
        self.console = workdir / "console.log"
        self.qmp_socket = config.run_dir / f"{workdir.name}.qmp"
        self._devices_file = workdir / "devices.json"
        self._qmp: QmpClient | None = None
        self._child: subprocess.Popen[bytes] | None = None
        #: the exit status of the QEMU this driver started, once it exited
        self._exit_status: int | None = None
        #: why the server stopped without being asked to (until the next power-on)
        self._died = ""

    @property
    def _tag(self) -> str:
        return f"bmaas-{self.workdir.name}"

    # -- devices.json: {disk id: {"qdev": id, "slot": n or -1}} -------------
    def _devices(self) -> dict[str, dict[str, object]]:
        try:
            data = json.loads(self._devices_file.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _save_devices(self, devices: dict[str, dict[str, object]]) -> None:
        tmp = self._devices_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(devices))
        tmp.replace(self._devices_file)

    # -- process -------------------------------------------------------------
    def _pid(self) -> int:
        try:
            return int(self.pidfile.read_text())
        except (OSError, ValueError):
            return 0

    def _running(self) -> bool:
        if self._child is not None:
            # our own QEMU: poll() reaps it and keeps its exit status (pid_alive
            # would reap a zombie child itself and lose the status)
            if self._child.poll() is None:
                return True
            self._exit_status = self._child.returncode
            self._child = None
            return False
        return pid_alive(self._pid(), must_contain=self._tag)

    async def _client(self) -> QmpClient:
        if self._qmp is None:
            self._qmp = await QmpClient.connect(self.qmp_socket, timeout=10.0, on_event=self._event)
        return self._qmp

    def _event(self, event: QmpEvent) -> None:
        if event.name in HEALTH_EVENTS and self.on_change is not None:
            self.on_change()

    async def _exec(self, command: str, /, **arguments: object) -> object:
        """One QMP command; a connection lost since the last one is re-opened once."""
        try:
            return await (await self._client()).execute(command, **arguments)
        except QmpConnectionError:
            if self._qmp is not None:
                await self._qmp.aclose()
            self._qmp = None
            return await (await self._client()).execute(command, **arguments)

    async def _wait_gone(self, seconds: float) -> bool:
        for _ in range(max(1, int(seconds / 0.05))):
            if not self._running():
                return True
            await asyncio.sleep(0.05)
        return not self._running()

    async def adopt(self) -> bool:
        if not self._running():
            return False
        with contextlib.suppress(QmpError, OSError, TimeoutError):
            await self._client()
        return True

    def _accel(self, firmware: UefiFirmware) -> str:
        return firmware_accelerator(
            firmware.code, firmware.vars_template, cache_dir=self.config.state_dir
        )

    async def power_on(self, machine: Machine) -> None:
        if self._running():
            return
        self._died = ""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.qmp_socket.parent.mkdir(parents=True, exist_ok=True)
        self.qmp_socket.unlink(missing_ok=True)
        firmware = UefiFirmware(vars=self.workdir / "vars.fd")
        spec = ServerSpec(
            name=self._tag,
            serial_log=self.console,
            memory_mib=machine.memory_mib,
            cpus=machine.cpus,
            accel=await asyncio.to_thread(self._accel, firmware),
            firmware=firmware,
            disks=tuple(
                BlkDisk(socket=d.socket, num_queues=d.queues, bootindex=0 if d.boot else None)
                for d in machine.disks
            ),
            nics=tuple(NetNic(socket=n.socket, mac=n.mac, queues=n.queues) for n in machine.nics),
            qmp_socket=self.qmp_socket,
            hotplug_slots=HOTPLUG_SLOTS,
            pvpanic=True,
        )
        binary = shutil.which("qemu-system-x86_64")
        if binary is None:
            raise PowerError("qemu-system-x86_64 not found on PATH")
        argv = _server_argv(build_argv(spec, qemu=binary), self.console)
        await asyncio.to_thread(prepare_firmware, firmware)
        cold: dict[str, dict[str, object]] = {
            d.id: {"qdev": f"disk{i}", "slot": -1, "chardev": f"blk{i}"}
            for i, d in enumerate(machine.disks)
        }
        cold.update(
            {n.id: {"qdev": f"nic{i}", "slot": -1, "netdev": f"netdev{i}", "chardev": f"net{i}"}
             for i, n in enumerate(machine.nics)}
        )  # fmt: skip
        self._save_devices(cold)
        self._child = await asyncio.to_thread(self._spawn, argv)
        self.pidfile.write_text(str(self._child.pid))
        self._pin(self._child.pid)
        try:
            await self._client()
        except (QmpError, OSError, TimeoutError) as exc:
            await self._kill()
            raise PowerError(f"QEMU did not start: {self._qemu_log_tail()}") from exc
        await self._settle()

    async def _settle(self) -> None:
        """Watch the first ``BOOT_SETTLE_S`` of a boot, so that the health
        read right after a power-on or reset already sees a CPU that stopped."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BOOT_SETTLE_S
        while loop.time() < deadline:
            try:
                status = await self._query("query-status")
            except (QmpError, OSError, TimeoutError):
                return
            if not isinstance(status, dict) or status.get("status") != "running":
                return
            await asyncio.sleep(0.1)

    def _spawn(self, argv: list[str]) -> subprocess.Popen[bytes]:
        with (self.workdir / "qemu.log").open("ab") as log:
            return subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )

    def _pin(self, pid: int) -> None:
        """Keep the server's vCPUs off the card's CPUs when there are CPUs to spare."""
        cpus = sorted(os.sched_getaffinity(0))
        card = self.config.card_cpus
        if card and len(cpus) > card:
            for task in Path(f"/proc/{pid}/task").iterdir():
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(int(task.name), set(cpus[card:]))

    def _qemu_log_tail(self) -> str:
        text = self._qemu_log(4096).strip()
        return text.splitlines()[-1][-400:] if text else "no output"

    def _qemu_log(self, limit: int) -> str:
        """The newest *limit* bytes QEMU wrote to its stderr."""
        try:
            with (self.workdir / "qemu.log").open("rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - limit))
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    async def power_off(self, *, grace: float = 0.0) -> None:
        if not self._running():
            await self._forget()
            return
        if grace > 0:
            with contextlib.suppress(QmpError, OSError, TimeoutError):
                await self._exec("system_powerdown")
                await self._wait_gone(grace)
        if self._running():
            with contextlib.suppress(QmpError, OSError, TimeoutError):
                await self._exec("quit")
            await self._wait_gone(5)
        await self._kill()

    async def _kill(self) -> None:
        pid = self._pid()
        if self._running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            await self._wait_gone(5)
        if self._child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(self._child.wait, 5)
            self._child = None
        await self._forget()

    async def _forget(self) -> None:
        self._exit_status, self._died = None, ""
        if self._qmp is not None:
            await self._qmp.aclose()
            self._qmp = None
        self.pidfile.unlink(missing_ok=True)
        self.qmp_socket.unlink(missing_ok=True)
        self._devices_file.unlink(missing_ok=True)

    async def reboot(self) -> None:
        """A hard reset; a guest that had stopped (panicked, internal error)
        is left in ``prelaunch`` by the reset and needs a ``cont`` to run."""
        try:
            await self._exec("system_reset")
            status = await self._query("query-status")
            if isinstance(status, dict) and status.get("status") != "running":
                await self._exec("cont")
        except (QmpError, OSError, TimeoutError) as exc:
            raise PowerError(f"reset failed: {exc}") from exc
        await self._settle()

    async def _query(self, command: str) -> object:
        async with asyncio.timeout(QMP_QUERY_TIMEOUT):
            return await self._exec(command)

    async def health(self) -> Health:
        if not self._running():
            return Health(False, self._died) if self._died else HEALTHY
        try:
            status = await self._query("query-status")
        except (QmpError, OSError, TimeoutError):
            return HEALTHY  # cannot tell now; the next run asks again
        return from_qmp(
            status if isinstance(status, dict) else {},
            self._qmp.events if self._qmp is not None else (),
            console=self.console_tail(16 * 1024).decode(errors="replace"),
            qemu_log=self._qemu_log(4096),
        )

    async def state(self) -> Power:
        if not self._running():
            if self.pidfile.exists():  # it stopped by itself
                died = await self._why_stopped()
                await self._forget()
                self._died = died
            return Power.OFF
        return Power.ON

    async def _why_stopped(self) -> str:
        """Empty when the server powered off (the guest shut down: QEMU said
        ``SHUTDOWN`` and exited 0); else why QEMU died under the guest."""
        status = self._exit_status
        if status is not None:  # the QEMU this driver started
            if status == 0:
                return ""
            if status < 0:
                with contextlib.suppress(ValueError):
                    return f"the server's QEMU was killed by {signal.Signals(-status).name}"
            return f"the server's QEMU exited with status {status}: {self._qemu_log_tail()}"
        if self._qmp is None:
            return ""  # adopted and never asked: nothing to go by
        try:  # the session ends with QEMU; it said SHUTDOWN first if it shut down
            await self._qmp.wait_event("SHUTDOWN", timeout=1.0)
        except QmpConnectionError:
            return f"the server's QEMU stopped unexpectedly: {self._qemu_log_tail()}"
        except TimeoutError:
            return ""
        return ""

    def console_tail(self, limit: int) -> bytes:
        try:
            with self.console.open("rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - limit))
                return f.read()
        except OSError:
            return b""

    async def attach_disk(self, disk: Disk) -> None:
        devices = self._devices()
        if disk.id in devices:
            return
        slot = self._free_slot(devices, disk.id)
        chardev = f"c{disk.id}"
        with contextlib.suppress(QmpError):
            await self._exec("chardev-remove", id=chardev)  # a half-done earlier attempt
        try:
            await self._exec("chardev-add", id=chardev, backend=_unix_client(disk.socket))
            await self._exec(
                "device_add",
                driver="vhost-user-blk-pci",
                id=disk.id,
                chardev=chardev,
                bus=hotplug_bus(slot),
                **{"num-queues": disk.queues},
            )
        except QmpError as exc:
            raise PowerError(f"hot-plug of {disk.id} failed: {exc}") from exc
        devices[disk.id] = {"qdev": disk.id, "slot": slot, "chardev": chardev}
        self._save_devices(devices)

    async def attach_nic(self, nic: Nic) -> None:
        devices = self._devices()
        if nic.id in devices:
            return
        slot = self._free_slot(devices, nic.id)
        chardev, netdev = f"c{nic.id}", f"d{nic.id}"
        try:
            kvm = await self._query("query-kvm")
        except (QmpError, OSError, TimeoutError) as exc:
            raise PowerError(f"hot-plug of NIC {nic.id} failed: {exc}") from exc
        accel = "kvm" if isinstance(kvm, dict) and kvm.get("enabled") else "tcg"
        with contextlib.suppress(QmpError):
            await self._exec("netdev_del", id=netdev)  # a half-done earlier attempt
        with contextlib.suppress(QmpError):
            await self._exec("chardev-remove", id=chardev)
        try:
            await self._exec("chardev-add", id=chardev, backend=_unix_client(nic.socket))
            await self._exec(
                "netdev_add", type="vhost-user", id=netdev, chardev=chardev, queues=nic.queues
            )
            await self._exec(
                "device_add",
                driver="virtio-net-pci",
                id=nic.id,
                netdev=netdev,
                mac=nic.mac,
                bus=hotplug_bus(slot),
                **net_quirks(accel),
            )
        except QmpError as exc:
            raise PowerError(f"hot-plug of NIC {nic.id} failed: {exc}") from exc
        devices[nic.id] = {"qdev": nic.id, "slot": slot, "netdev": netdev, "chardev": chardev}
        self._save_devices(devices)

    async def detach_nic(self, nic_id: str) -> None:
        await self._unplug(nic_id)

    def _free_slot(self, devices: dict[str, dict[str, object]], what: str) -> int:
        used = {int(str(d.get("slot", -1))) for d in devices.values()}
        free = [s for s in range(HOTPLUG_SLOTS) if s not in used]
        if not free:
            raise PowerError(f"no free hot-plug slot for {what} ({HOTPLUG_SLOTS} in use)")
        return free[0]

    async def detach_disk(self, disk_id: str) -> None:
        await self._unplug(disk_id)

    async def _unplug(self, dev_id: str) -> None:
        """``device_del``, wait for the guest to let go, then drop its netdev and chardev."""
        devices = self._devices()
        entry = devices.get(dev_id)
        if entry is None:
            return
        qdev = str(entry["qdev"])
        try:
            await self._exec("device_del", id=qdev)
            await (await self._client()).wait_event(
                "DEVICE_DELETED", data={"device": qdev}, timeout=30
            )
        except QmpError as exc:
            if "not found" not in str(exc):
                raise PowerError(f"unplug of {dev_id} failed: {exc}") from exc
        except TimeoutError as exc:
            raise PowerError(f"the guest did not release {dev_id} within 30 s") from exc
        if entry.get("netdev"):
            with contextlib.suppress(QmpError):
                await self._exec("netdev_del", id=str(entry["netdev"]))
        with contextlib.suppress(QmpError):
            await self._exec("chardev-remove", id=str(entry.get("chardev", f"c{dev_id}")))
        del devices[dev_id]
        self._save_devices(devices)

    def attached_disks(self) -> set[str]:
        return set(self._devices())

    async def aclose(self) -> None:
        if self._qmp is not None:
            await self._qmp.aclose()
            self._qmp = None


def _unix_client(path: Path) -> dict[str, object]:
    """A QMP chardev backend: a client of the back-end's socket that reconnects."""
    return {
        "type": "socket",
        "data": {
            "addr": {"type": "unix", "data": {"path": str(path)}},
            "server": False,
            "reconnect": 1,
        },
    }


def _server_argv(argv: list[str], console: Path) -> list[str]:
    """A server, unlike a test guest, survives its own reboot and keeps its
    console across power cycles: drop ``-no-reboot``, append to the log."""
    out = [a for a in argv if a != "-no-reboot"]
    serial = f"file,id=serial0,path={console}"
    return [a + ",append=on" if a == serial else a for a in out]
