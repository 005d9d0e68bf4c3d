"""The QEMU power driver's process: a QEMU that stands in for the server.

QEMU plays only the motherboard (CPU and RAM).  It runs with ``-nodefaults``,
its RAM is a ``memory-backend-memfd`` with ``share=on`` (so the card can map
it), and its only devices are vhost-user ones served by the card:
``vhost-user-blk-pci`` per disk and ``virtio-net-pci`` on a ``vhost-user``
netdev per NIC.  QEMU itself does no I/O work.

The server boots one of two ways.  Direct kernel boot (``kernel``,
``initrd``, ``append``) is quick and what most tests use.  Firmware boot
(``firmware=UefiFirmware(...)``) is what a real server does: OVMF's code is a
read-only pflash, its variable store (the server's NVRAM) a second, writable
pflash that is this server's own copy of the template, created on the first
``start()`` and kept across power cycles.  OVMF then boots the disk with the
lowest ``bootindex`` (a GPT disk with an EFI system partition, see
``tools/diskimage.py``); there is no ``-kernel``.  Both flashes are attached
with ``-blockdev`` and the machine's ``pflash0``/``pflash1`` properties.

Disks can be hot-plugged through QMP.  q35's root complex takes no hot-plug,
so ``hotplug_slots=N`` creates N empty ``pcie-root-port`` devices with ids
``hotplug_bus(0)`` ... ``hotplug_bus(N-1)``, the ``bus=`` of a later
``device_add``.  They come after the cold-plugged devices on the command
line, so adding slots does not move the PCI addresses of existing disks (the
NVRAM's boot entries name those addresses).

Under TCG every virtio-net device gets ``vectors=0`` (``net_quirks``: QEMU
7.2 crashes when a guest enables MSI-X on a vhost-user virtio-net device).
``pvpanic=True`` adds the ISA ``pvpanic`` device (it takes no PCI address)
and ``-action panic=pause``: a guest that panics stays in the
``guest-panicked`` run state, which ``query-status`` reports.

``ServerSpec`` describes the machine; ``build_argv`` turns it into a command
line (pure, unit-tested); ``QemuServer`` owns the process: ``start()``,
``wait_for_serial()`` (polls the serial log, which QEMU writes to a file),
and ``aclose()``, which asks QEMU to quit, then kills it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType


class QemuError(Exception):
    """QEMU could not be started or exited unexpectedly."""


@dataclass(frozen=True)
class BlkDisk:
    """A vhost-user-blk disk: the card serves it on *socket*."""

    socket: Path
    num_queues: int = 1
    bootindex: int | None = None


@dataclass(frozen=True)
class NetNic:
    """A virtio-net NIC on a vhost-user netdev served on *socket*."""

    socket: Path
    mac: str
    queues: int = 1


OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")  # Debian ovmf
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")


@dataclass(frozen=True)
class UefiFirmware:
    """OVMF: read-only *code*, and *vars*, this server's writable variable store.

    *vars* is copied from *vars_template* when it does not exist yet.  The
    GRUB of our disk images needs ``memory_mib >= 384`` to load the kernel.
    """

    vars: Path
    code: Path = OVMF_CODE
    vars_template: Path = OVMF_VARS


@dataclass(frozen=True)
class ServerSpec:
    """What the stand-in server looks like (CPU, RAM, boot, devices)."""

    name: str
    serial_log: Path
    memory_mib: int = 256
    cpus: int = 1
    accel: str = "tcg"
    kernel: Path | None = None
    initrd: Path | None = None
    append: str = "console=ttyS0 panic=-1"
    disks: tuple[BlkDisk, ...] = ()
    nics: tuple[NetNic, ...] = ()
    qmp_socket: Path | None = None
    reconnect_s: int = 1
    firmware: UefiFirmware | None = None
    hotplug_slots: int = 0
    #: a ``pvpanic`` device; a guest panic then stops the server in the
    #: ``guest-panicked`` state (``-action panic=pause``) for QMP to see
    pvpanic: bool = False
    extra: tuple[str, ...] = field(default=())


def build_argv(spec: ServerSpec, *, qemu: str = "qemu-system-x86_64") -> list[str]:
    """The QEMU command line for *spec*."""
    if spec.accel not in ("kvm", "tcg"):
        raise ValueError(f"unknown accelerator {spec.accel!r}")
    if spec.firmware is not None and spec.kernel is not None:
        raise ValueError("firmware boots from a disk; give either firmware or kernel, not both")
    if spec.hotplug_slots < 0:
        raise ValueError(f"hotplug_slots must be >= 0, got {spec.hotplug_slots}")
    cpu = "host" if spec.accel == "kvm" else "max"
    machine = "q35,memory-backend=ram0"
    if spec.firmware is not None:
        machine += ",pflash0=fw-code,pflash1=fw-vars"
    argv = [
        qemu,
        "-name", spec.name,
        "-nodefaults",
        "-display", "none",
        "-no-user-config",
        "-accel", spec.accel,
        "-cpu", cpu,
        "-smp", str(spec.cpus),
        "-m", f"{spec.memory_mib}M",
        "-object", f"memory-backend-memfd,id=ram0,size={spec.memory_mib}M,share=on",
        "-machine", machine,
        "-chardev", f"file,id=serial0,path={spec.serial_log}",
        "-serial", "chardev:serial0",
        "-no-reboot",
    ]  # fmt: skip
    if spec.firmware is not None:
        fw = spec.firmware
        argv += [
            "-blockdev", f"node-name=fw-code,driver=file,filename={fw.code},read-only=on",
            "-blockdev", f"node-name=fw-vars,driver=file,filename={fw.vars}",
        ]  # fmt: skip
    if spec.kernel is not None:
        argv += ["-kernel", str(spec.kernel), "-append", spec.append]
        if spec.initrd is not None:
            argv += ["-initrd", str(spec.initrd)]
    if spec.qmp_socket is not None:
        argv += ["-qmp", f"unix:{spec.qmp_socket},server=on,wait=off"]
    for i, disk in enumerate(spec.disks):
        argv += [
            "-chardev", f"socket,id=blk{i},path={disk.socket},reconnect={spec.reconnect_s}",
            "-device", _device(
                "vhost-user-blk-pci", chardev=f"blk{i}", id=f"disk{i}",
                **{"num-queues": disk.num_queues, "bootindex": disk.bootindex},
            ),
        ]  # fmt: skip
    for i, nic in enumerate(spec.nics):
        argv += [
            "-chardev", f"socket,id=net{i},path={nic.socket},reconnect={spec.reconnect_s}",
            "-netdev", f"vhost-user,id=netdev{i},chardev=net{i},queues={nic.queues}",
            "-device", _device(
                "virtio-net-pci", netdev=f"netdev{i}", id=f"nic{i}", mac=nic.mac,
                mq="on" if nic.queues > 1 else None, **net_quirks(spec.accel),
            ),
        ]  # fmt: skip
    for i in range(spec.hotplug_slots):
        argv += ["-device", _device("pcie-root-port", id=hotplug_bus(i), chassis=i + 1)]
    if spec.pvpanic:
        argv += ["-device", "pvpanic", "-action", "panic=pause"]
    return argv + list(spec.extra)


def net_quirks(accel: str) -> dict[str, object]:
    """Extra ``virtio-net-pci`` properties for *accel*.

    Under TCG, QEMU 7.2 crashes when a guest enables MSI-X on a virtio-net
    device whose netdev is vhost-user; ``vectors=0`` gives the device no
    MSI-X table, so every guest driver falls back to INTx and no tenant
    image needs ``pci=nomsi``.  KVM does not have the problem.
    """
    return {"vectors": 0} if accel == "tcg" else {}


def hotplug_bus(slot: int) -> str:
    """The id of hot-plug slot *slot*'s root port: ``device_add``'s ``bus=``."""
    return f"hp{slot}"


def prepare_firmware(firmware: UefiFirmware) -> None:
    """Create the server's variable store from the template unless it exists."""
    if firmware.vars.exists():
        return
    firmware.vars.parent.mkdir(parents=True, exist_ok=True)
    partial = firmware.vars.with_name(firmware.vars.name + ".tmp")
    shutil.copyfile(firmware.vars_template, partial)
    partial.replace(firmware.vars)


def _device(driver: str, **props: object) -> str:
    return ",".join([driver, *(f"{k}={v}" for k, v in props.items() if v is not None)])


class QemuServer:
    """One QEMU process standing in for a server; ``async with`` owns it."""

    def __init__(self, spec: ServerSpec, *, qemu: str = "qemu-system-x86_64") -> None:
        self.spec = spec
        binary = shutil.which(qemu)
        if binary is None:
            raise QemuError(f"{qemu} not found on PATH")
        self.argv = build_argv(spec, qemu=binary)
        self._proc: asyncio.subprocess.Process | None = None
        self._stderr_path = spec.serial_log.with_suffix(".stderr")

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.returncode

    async def start(self) -> None:
        self.spec.serial_log.parent.mkdir(parents=True, exist_ok=True)
        self.spec.serial_log.write_bytes(b"")
        if self.spec.firmware is not None:
            prepare_firmware(self.spec.firmware)
        with self._stderr_path.open("wb") as err:
            self._proc = await asyncio.create_subprocess_exec(
                *self.argv, stdin=asyncio.subprocess.DEVNULL, stdout=err, stderr=err
            )

    def serial_text(self) -> str:
        try:
            return self.spec.serial_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stderr_text(self) -> str:
        try:
            return self._stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    async def wait_for_serial(self, pattern: str, *, timeout: float) -> re.Match[str]:
        """Wait until *pattern* (a regex) appears on the serial console."""
        regex = re.compile(pattern)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            match = regex.search(self.serial_text())
            if match is not None:
                return match
            if self._proc is not None and self._proc.returncode is not None:
                raise QemuError(
                    f"QEMU exited ({self._proc.returncode}) before {pattern!r} appeared; "
                    f"stderr: {self.stderr_text()[-2000:]!r}; serial tail: "
                    f"{self.serial_text()[-2000:]!r}"
                )
            if loop.time() > deadline:
                raise TimeoutError(
                    f"{pattern!r} not on the serial console after {timeout}s; "
                    f"tail: {self.serial_text()[-2000:]!r}"
                )
            await asyncio.sleep(0.1)

    async def wait(self, *, timeout: float) -> int:
        """Wait for QEMU to exit (e.g. the guest powered off)."""
        if self._proc is None:
            raise QemuError("QEMU was not started")
        return await asyncio.wait_for(self._proc.wait(), timeout)

    async def aclose(self) -> None:
        """Terminate QEMU (SIGTERM, then SIGKILL after 5 s) and reap it."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        self._stderr_path.unlink(missing_ok=True)

    async def __aenter__(self) -> QemuServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
