"""The agent's reconciler: desired state in, devices, power and reports out.

Level-triggered, like the control plane's controllers.  ``converge()`` runs
whenever a new ``Desired`` arrives and every ``resync`` seconds anyway
(that is how it notices a server that powered itself off, a back-end that
died, a console that printed something), and each run does the same thing
from scratch:

1. **Teardown** of every instance the agent knows that is no longer desired
   (or is terminating): power off, stop its back-ends, delete its boot disk
   and working files.  Data volumes stay (they belong to the tenant).
2. **Cleaning**, once no instance is left: when the desired state asks to
   clean an epoch not yet wiped, wipe every local disk, verify the wipe by
   reading back, persist and report ``wiped_epoch``.
3. **The bound instance**, if any: fetch its image (cached, checksum
   verified), clone the boot disk, create the local disks, start one
   ``offload-blk`` per disk, then apply power.  Power follows the action
   generation (``agent.proto``): the first run powers on (or leaves off)
   as desired; afterwards only a *higher* generation than the one acted on
   changes power (off, on, or a reset for REBOOTING).  Data volumes are
   hot-plugged and unplugged to match the desired list, and a volume whose
   desired size grew is grown on disk and its back-end told (the guest sees
   the new capacity online).
4. **Reports**: the observed phase with the generation acted on, the
   console tail when it changed.  Duplicates are suppressed; ``resend()``
   (after a reconnect) forgets what was sent.

A provisioning error that retrying cannot fix (a bad checksum, an image
that is not a disk) fails the instance with the error as its reason and
tears down what was created; transient errors (the image server is down)
are retried by the next run.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from host_agent import metrics
from host_agent.config import AgentConfig
from host_agent.desired import Desired, DesiredInstance, DesiredVolume, Phase, Power
from host_agent.devices import Backend, BlkSpec, DeviceError, NetSpec, stop_leftovers
from host_agent.files import write_private
from host_agent.network import HostFabric
from host_agent.power.base import Disk, Machine, Nic, PowerDriver, PowerError
from host_agent.reports import ConsoleReport, HostReport, InstanceReport, Report
from host_agent.state import AgentState, InstanceRecord
from host_agent.storage.clone import clone_volume, create_volume, grow_volume
from host_agent.storage.errors import (
    ImageChecksumMismatch,
    ImageNotBootable,
    ImageNotFound,
    InvalidChecksum,
    StorageError,
    UnsupportedImageSource,
)
from host_agent.storage.images import ImageCache
from host_agent.storage.wipe import wipe_disk
from offload.network.errors import NetworkError
from offload.network.fabric import VpcPort

log = logging.getLogger("host_agent.reconcile")

GIB = 1 << 30
CONSOLE_TAIL = 64 * 1024
#: errors that fail the instance instead of being retried
_PERMANENT = (
    ImageChecksumMismatch,
    ImageNotBootable,
    ImageNotFound,
    InvalidChecksum,
    UnsupportedImageSource,
)


class ProvisionFailed(Exception):
    """Provisioning cannot succeed (the message is the instance's failure reason)."""


def _pluggable(volume: str, disk: Disk) -> bool:
    """Data volumes come and go while the server runs; boot and local disks do not."""
    return not disk.boot and not volume.startswith("local/")


def _fake_disk(volume: str) -> Disk:
    return Disk(id="v" + short_id(volume)[:10], socket=Path())


def tap_name(nic: str) -> str:
    """The TAP of a NIC on its host (15 characters at most)."""
    return "bmt" + short_id(nic)[:10]


def short_id(name: str) -> str:
    """A short, stable file-name-safe id for an AIP name (sockets have 108 bytes)."""
    return hashlib.sha256(name.encode()).hexdigest()[:12]


class Reconciler:
    def __init__(
        self,
        config: AgentConfig,
        *,
        driver_factory: Callable[[Path], PowerDriver],
        report: Callable[[Report], None],
    ) -> None:
        self.config = config
        self._driver_factory = driver_factory
        self._report = report
        self._state_file = config.state_dir / "agent.json"
        self.state = AgentState.load(self._state_file)
        self.images = ImageCache(
            config.image_dir,
            max_bytes=int(config.image_cache_gib * GIB),
            on_evict=lambda _: metrics.IMAGE_CACHE_EVICTIONS.inc(),
        )
        self.desired: Desired | None = None
        #: the DesiredState.generation of the last fully applied desired state
        self.applied_generation = 0
        self._drivers: dict[str, PowerDriver] = {}
        self._backends: dict[str, Backend] = {}
        self._sent: dict[str, object] = {}
        #: per instance, the wall-clock time each provisioning step finished
        #: (provision_start, image_fetched, cloned, devices_started, powered_on)
        self.timeline: dict[str, dict[str, float]] = {}
        self._wake = asyncio.Event()
        #: the VPC ports (one per NIC) this host carries, and the fabric holding them
        self._ports: dict[str, VpcPort] = {}
        self._fabric: HostFabric | None = None
        self._lock = asyncio.Lock()
        self._last_error = ""

    # -- paths ------------------------------------------------------------
    def instance_dir(self, name: str) -> Path:
        return self.config.state_dir / "instances" / short_id(name)

    def volume_path(self, volume: str) -> Path:
        return self.config.volume_dir / f"{short_id(volume)}.img"

    def local_disk_path(self, disk: str) -> Path:
        return self.config.state_dir / "local" / f"{disk}.img"

    def socket_path(self, instance: str, disk_id: str) -> Path:
        return self.config.run_dir / f"{short_id(instance)[:8]}-{disk_id}.sock"

    def _mark(self, name: str, step: str, *, once: bool = False) -> None:
        """Record when *step* of provisioning *name* finished (``timeline``)."""
        steps = self.timeline.setdefault(name, {})
        if not (once and step in steps):
            steps[step] = time.time()

    def backends(self) -> list[Backend]:
        """The device back-ends this agent supervises now."""
        return list(self._backends.values())

    # -- entry points -----------------------------------------------------
    def set_desired(self, desired: Desired) -> None:
        self.desired = desired
        self._wake.set()

    def resend(self) -> None:
        """Forget what was reported (a new stream): the next run sends it all again."""
        self._sent.clear()
        self._wake.set()

    async def run(self) -> None:
        """Converge on every new desired state and every ``resync`` seconds."""
        await self.adopt()
        loop = asyncio.get_running_loop()
        while True:
            # a timer handle, not wait_for's task + timer: cheap enough for
            # thousands of agents in one process (scale tests)
            timer = loop.call_later(self.config.resync, self._wake.set)
            await self._wake.wait()
            timer.cancel()
            self._wake.clear()
            try:
                await self.converge()
                self._last_error = ""
            except Exception as exc:
                metrics.RECONCILE_ERRORS.inc()
                # a traceback once per new problem, not one every resync period
                problem = f"{type(exc).__name__}: {exc}"
                if problem != self._last_error:
                    log.exception("reconcile failed; retrying every %.1fs", self.config.resync)
                    self._last_error = problem

    async def adopt(self) -> None:
        """After a restart: find the servers and back-ends a previous agent left."""
        for name in list(self.state.instances):
            driver = self._driver(name)
            if await driver.adopt():
                log.info("adopted the running server of %s", name)

    async def aclose(self) -> None:
        """Let go of drivers without touching the servers (agent shutdown)."""
        for driver in self._drivers.values():
            await driver.aclose()
        if self._fabric is not None:
            self._fabric.close()
            self._fabric = None

    async def converge(self) -> None:
        async with self._lock:
            desired = self.desired
            if desired is None:
                return
            started = time.monotonic()
            wanted = {i.name: i for i in desired.instances if i.wants_server}
            for name in list(self.state.instances):
                inst = wanted.get(name)
                if inst is None and name not in {i.name for i in desired.instances}:
                    await self._teardown(name)
                elif inst is None:
                    await self._teardown(name, keep_record=True)
            if desired.clean and not self.state.instances and not desired.instances:
                await self._clean(desired.cleaning_epoch)
            for inst in desired.instances:
                if inst.wants_server:
                    await self._instance(inst)
                else:
                    rec = self.state.instances.get(inst.name)
                    if rec is not None and rec.failed:
                        self._send(
                            InstanceReport(inst.name, Phase.FAILED, inst.generation, rec.failed)
                        )
            self._send(HostReport(self.state.wiped_epoch))
            self.applied_generation = desired.generation
            metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)

    # -- reports ----------------------------------------------------------
    def _send(self, report: Report) -> None:
        key = type(report).__name__ + getattr(report, "instance", "")
        if self._sent.get(key) == report:
            return
        self._sent[key] = report
        self._report(report)

    # -- the bound instance ----------------------------------------------
    def _driver(self, name: str) -> PowerDriver:
        driver = self._drivers.get(name)
        if driver is None:
            driver = self._driver_factory(self.instance_dir(name))
            self._drivers[name] = driver
        return driver

    def _save(self) -> None:
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        self.state.save(self._state_file)

    async def _instance(self, inst: DesiredInstance) -> None:
        rec = self.state.instances.get(inst.name)
        if rec is None:
            rec = self.state.instances[inst.name] = InstanceRecord(name=inst.name)
            self._save()
        if rec.failed:
            self._send(InstanceReport(inst.name, Phase.FAILED, inst.generation, rec.failed))
            return
        driver = self._driver(inst.name)
        if rec.generation < 0:
            self._mark(inst.name, "provision_start", once=True)
            self._send(InstanceReport(inst.name, Phase.PROVISIONING, inst.generation))
        try:
            disks = await self._provision(inst)
            nics = await self._nics(inst)
        except ProvisionFailed as exc:
            rec.failed = str(exc) or "provisioning failed"
            self._save()
            log.warning("%s failed: %s", inst.name, rec.failed)
            await self._teardown(inst.name, keep_record=True)
            self._send(InstanceReport(inst.name, Phase.FAILED, inst.generation, rec.failed))
            return
        await self._unplug_removed(rec, driver, disks, nics)
        if await driver.state() == Power.OFF:
            # a server powers on with exactly what is desired now
            rec.attached = [v for v, d in disks.items() if _pluggable(v, d)]
            rec.nics = list(nics)
            self._save()
        machine = Machine(
            name=inst.id,
            cpus=self.config.server_cpus,
            memory_mib=self.config.server_memory_mib,
            disks=tuple(d for v, d in disks.items() if not _pluggable(v, d) or v in rec.attached),
            nics=tuple(nics[n] for n in rec.nics if n in nics),
        )
        await self._power(inst, rec, driver, machine)
        await self._plug_new(rec, driver, disks, nics)
        power = await driver.state()
        metrics.POWER_STATE.labels(inst.id).set(1 if power == Power.ON else 0)
        phase = Phase.RUNNING if power == Power.ON else Phase.STOPPED
        self._send(InstanceReport(inst.name, phase, max(rec.generation, 0)))
        tail = driver.console_tail(CONSOLE_TAIL)
        if tail:
            self._send(ConsoleReport(inst.name, tail))

    async def _provision(self, inst: DesiredInstance) -> dict[str, Disk]:
        """A served disk for every desired volume (boot disk, local disks, data
        volumes, in that order), created and started as needed (idempotent).

        The files come first (the boot disk's clone, local disks, data
        volumes); then every back-end starts at once, since each is a process
        whose start-up is mostly waiting."""
        if not self.config.devices:
            return {v.volume: _fake_disk(v.volume) for v in inst.volumes if not v.boot}
        wanted: list[tuple[str, Path, bool]] = []  # volume, file, boot
        boot = next((v for v in inst.volumes if v.boot), None)
        if boot is not None:
            path = self.volume_path(boot.volume)
            if not path.exists():
                await self._clone_boot(inst, boot, path)
            wanted.append((boot.volume, path, True))
        for local in self.config.local_disks:
            path = self.local_disk_path(local.name)
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                await asyncio.to_thread(create_volume, path, local.size_gib * GIB)
            wanted.append((f"local/{local.name}", path, False))
        for vol in inst.volumes:
            if not vol.boot:
                wanted.append((vol.volume, await self._data_volume(vol), False))
        disks = await asyncio.gather(
            *(self._serve(inst, volume, path, boot=is_boot) for volume, path, is_boot in wanted)
        )
        return {volume: disk for (volume, _, _), disk in zip(wanted, disks, strict=True)}

    async def _clone_boot(self, inst: DesiredInstance, boot: DesiredVolume, path: Path) -> None:
        if not inst.image_uri:
            raise ProvisionFailed(f"{inst.image or 'the image'} has no source URI")
        started = time.monotonic()
        async with contextlib.AsyncExitStack() as pinned:  # the cache keeps the image meanwhile
            try:
                image = await pinned.enter_async_context(
                    self.images.use(inst.image_uri, checksum=inst.image_checksum)
                )
            except _PERMANENT as exc:
                metrics.PROVISION_ERRORS.labels("image").inc()
                raise ProvisionFailed(str(exc)) from exc
            metrics.PROVISION_STEP_SECONDS.labels("image_fetch").observe(time.monotonic() - started)
            self._mark(inst.name, "image_fetched")
            started = time.monotonic()
            size = max(boot.size_gib * GIB, image.stat().st_size)
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                await asyncio.to_thread(clone_volume, image, path, size_bytes=size)
            except StorageError as exc:
                metrics.PROVISION_ERRORS.labels("clone").inc()
                raise ProvisionFailed(f"cloning the boot disk failed: {exc}") from exc
            except OSError as exc:  # ENOSPC and friends
                metrics.PROVISION_ERRORS.labels("clone").inc()
                raise ProvisionFailed(
                    f"cloning the boot disk failed: {exc.strerror or exc}"
                ) from exc
        metrics.PROVISION_STEP_SECONDS.labels("clone").observe(time.monotonic() - started)
        self._mark(inst.name, "cloned")

    async def _data_volume(self, vol: DesiredVolume) -> Path:
        """The volume's file, created (or grown to its desired size) as needed."""
        path = self.volume_path(vol.volume)
        size = vol.size_gib * GIB
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            await asyncio.to_thread(create_volume, path, size)
        elif path.stat().st_size < size:
            await asyncio.to_thread(grow_volume, path, size)
            backend = self._backends.get(vol.volume)
            if backend is not None:
                await asyncio.to_thread(backend.resize)
                metrics.VOLUME_RESIZES.inc()
        return path

    async def _serve(
        self, inst: DesiredInstance, volume: str, path: Path, *, boot: bool = False
    ) -> Disk:
        disk_id = ("b" if boot else "v") + short_id(volume)[:10]
        spec = BlkSpec(
            id=volume, image=path, socket=self.socket_path(inst.name, disk_id), serial=disk_id
        )
        backend = await self._start(spec)
        return Disk(id=disk_id, socket=backend.spec.socket, boot=boot)

    async def _start(self, spec: BlkSpec | NetSpec) -> Backend:
        """The running back-end for *spec* (adopted, or started now)."""
        backend = self._backends.get(spec.id)
        if backend is None:
            backend = self._backends[spec.id] = Backend(spec)
        started = time.monotonic()
        try:
            if await asyncio.to_thread(backend.ensure):
                metrics.PROVISION_STEP_SECONDS.labels("device_start").observe(
                    time.monotonic() - started
                )
        except DeviceError as exc:
            raise ProvisionFailed(str(exc)) from exc
        return backend

    async def _nics(self, inst: DesiredInstance) -> dict[str, Nic]:
        """An ``offload-net`` per NIC, its TAP in the VPC's bridge (VXLAN to the peers)."""
        if not self.config.devices:
            return {n.name: Nic(id=n.name, socket=Path(), mac=n.mac) for n in inst.nics}
        if not inst.nics:
            return {}
        if not self.config.underlay_address:
            raise ProvisionFailed("this host has no underlay_address: it cannot join a VPC")
        nics: dict[str, Nic] = {}
        for nic in inst.nics:
            nic_id = "n" + short_id(nic.name)[:10]
            prefix = ipaddress.ip_network(nic.subnet_cidr, strict=False).prefixlen
            meta = self.instance_dir(inst.name) / f"{nic_id}.json"
            write_private(  # the tenant's user data and keys: 0600 in a 0700 directory
                meta,
                json.dumps(
                    {
                        "instance_id": inst.id,
                        "hostname": inst.hostname or inst.id,
                        "public_keys": list(inst.ssh_keys),
                        "user_data": inst.user_data,
                    }
                ).encode(),
            )
            spec = NetSpec(
                id=nic.name,
                socket=self.socket_path(inst.name, nic_id),
                tap=tap_name(nic.name),
                mac=nic.mac,
                ip=f"{nic.private_ip}/{prefix}" if nic.private_ip else "",
                gateway=nic.gateway_ip,
                metadata=meta,
                mtu=self.config.nic_mtu,
                netns=self.config.netns,
            )
            await self._start(spec)
            self._ports[nic.name] = VpcPort(
                vpc_id=short_id(nic.vpc)[:12],
                vni=nic.vni,
                tap=spec.tap,
                remotes=tuple(ipaddress.IPv4Address(a) for a in nic.peers),
            )
            nics[nic.name] = Nic(id=nic_id, socket=spec.socket, mac=nic.mac)
        await self._fabric_reconcile()
        return nics

    async def _fabric_reconcile(self) -> None:
        if self._fabric is None:
            if not self._ports:
                return
            self._fabric = HostFabric(
                netns=self.config.netns, underlay_address=self.config.underlay_address
            )
        try:
            result = await self._fabric.reconcile(self._ports.values())
        except NetworkError as exc:
            raise ProvisionFailed(f"VPC fabric: {exc}") from exc
        if result.changes:
            log.info("fabric: %s", "; ".join(result.changes))

    async def _power(
        self, inst: DesiredInstance, rec: InstanceRecord, driver: PowerDriver, machine: Machine
    ) -> None:
        if rec.generation >= inst.generation:
            return  # acted on this generation already: power is what it is
        first = rec.generation < 0
        try:
            if inst.power == Power.OFF:
                await driver.power_off(grace=self.config.shutdown_grace)
            elif inst.state == "REBOOTING" and not first and await driver.state() == Power.ON:
                await driver.reboot()
            else:
                self._mark(inst.name, "devices_started", once=True)
                self._send(InstanceReport(inst.name, Phase.STARTING, inst.generation))
                await driver.power_on(machine)
                self._mark(inst.name, "powered_on", once=True)
        except PowerError as exc:
            metrics.RECONCILE_ERRORS.inc()
            raise ProvisionFailed(str(exc)) from exc
        rec.generation = inst.generation
        self._save()

    async def _unplug_removed(
        self,
        rec: InstanceRecord,
        driver: PowerDriver,
        disks: dict[str, Disk],
        nics: dict[str, Nic],
    ) -> None:
        """Take volumes and NICs no longer desired out of the server (if it
        runs) and stop their back-ends."""
        on = await driver.state() == Power.ON
        for volume in [v for v in rec.attached if v not in disks]:
            if on:
                await driver.detach_disk("v" + short_id(volume)[:10])
            await self._stop_backend(volume)
            rec.attached.remove(volume)
            self._save()
        for nic in [n for n in rec.nics if n not in nics]:
            if on:
                await driver.detach_nic("n" + short_id(nic)[:10])
            await self._stop_backend(nic)
            rec.nics.remove(nic)
            self._save()

    async def _plug_new(
        self,
        rec: InstanceRecord,
        driver: PowerDriver,
        disks: dict[str, Disk],
        nics: dict[str, Nic],
    ) -> None:
        """Hot-plug desired volumes and NICs the running server does not have yet."""
        if await driver.state() != Power.ON:
            return
        for volume, disk in disks.items():
            if _pluggable(volume, disk) and volume not in rec.attached:
                await driver.attach_disk(disk)
                rec.attached.append(volume)
                self._save()
        for name, nic in nics.items():
            if name not in rec.nics:
                await driver.attach_nic(nic)
                rec.nics.append(name)
                self._save()

    async def _stop_backend(self, key: str) -> None:
        backend = self._backends.pop(key, None)
        if backend is not None:
            await asyncio.to_thread(backend.stop)
        if self._ports.pop(key, None) is not None:
            await self._fabric_reconcile()

    # -- teardown and cleaning -------------------------------------------
    async def _teardown(self, name: str, *, keep_record: bool = False) -> None:
        """Remove everything this agent created for *name* (data volumes stay)."""
        driver = self._driver(name)
        await driver.power_off(grace=0.0)
        await driver.aclose()
        prefix = short_id(name)[:8] + "-"
        for key, backend in list(self._backends.items()):
            if backend.spec.socket.name.startswith(prefix):
                await self._stop_backend(key)
        # back-ends of a previous agent process this one never adopted
        await asyncio.to_thread(stop_leftovers, self.config.run_dir, prefix)
        self.volume_path(f"{name}/boot").unlink(missing_ok=True)
        shutil.rmtree(self.instance_dir(name), ignore_errors=True)
        self._drivers.pop(name, None)
        if not keep_record:
            self.state.instances.pop(name, None)
            self._sent.pop(InstanceReport.__name__ + name, None)
            self._sent.pop(ConsoleReport.__name__ + name, None)
            self.timeline.pop(name, None)
            self._save()
            with contextlib.suppress(KeyError):
                metrics.POWER_STATE.remove(name.rsplit("/", 1)[-1])
            log.info("tore down %s", name)

    async def _clean(self, epoch: int) -> None:
        if epoch <= self.state.wiped_epoch:
            return
        started = time.monotonic()
        for disk in self.config.local_disks:
            path = self.local_disk_path(disk.name)
            if path.exists():
                try:
                    result = await asyncio.to_thread(wipe_disk, path)
                except StorageError as exc:
                    metrics.WIPE_FAILURES.inc()
                    self._send(
                        HostReport(self.state.wiped_epoch, f"wipe of {disk.name} failed: {exc}")
                    )
                    raise
                log.info("wiped %s: %s", disk.name, result)
        self.state.wiped_epoch = epoch
        self._save()
        metrics.WIPE_SECONDS.observe(time.monotonic() - started)
        log.info("cleaning epoch %d done in %.2fs", epoch, time.monotonic() - started)
