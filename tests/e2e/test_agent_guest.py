"""Instances that really boot: control plane, agent, card and server, all real.

A real etcd, a real control plane with its controllers, and a real
``bmaas-agent`` (the ``Agent`` library, qemu power driver) whose card serves
the boot disk with ``offload-blk`` to a QEMU server stand-in that boots it
through UEFI firmware (OVMF).  Everything is driven through the tenant and
operator APIs; what the guest did is read from its console through
``GetConsoleOutput``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import re
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from bmaas.v1 import common_pb2, tenant_pb2
from tools.region.agents import AGENT_RUN_ROOT, tls_flags
from tools.region.control_plane import bearer
from tools.region.guest import GuestImage, disk_with
from tools.region.pki import default_pki
from tools.region.ports import free_port
from tools.region.process import kill_processes_under
from tools.region.region import Region, qemu_agent
from tools.region.wait import wait_for
from tools.region.world import make_tenant

pytestmark = pytest.mark.asyncio(loop_scope="session")
S = common_pb2
ZERO_MIB_MD5 = hashlib.md5(b"\0" * (1 << 20)).hexdigest()

WRITER = """
echo "LOCAL-BEFORE $(dd if=/dev/vdb bs=1M count=1 2>/dev/null | md5sum | cut -c1-32)"
dd if=/dev/urandom of=/dev/vdb bs=1M count=1 2>/dev/null
sync
echo "LOCAL-AFTER $(dd if=/dev/vdb bs=1M count=1 2>/dev/null | md5sum | cut -c1-32)"
echo BMAAS-IDLE
while true; do sleep 1; done
"""


async def test_boot_from_cloud_disk_power_actions_terminate_and_wipe(
    region: Region, guest_image: GuestImage, tmp_path: Path
) -> None:
    writer = await region.register_image(
        "writer", disk_with(guest_image, WRITER, tmp_path / "writer.raw")
    )
    async with qemu_agent(region, tmp_path / "agent", guest_image) as agent:
        name = await region.create(writer)
        await region.wait_state(name, S.INSTANCE_STATE_RUNNING)
        # firmware -> GRUB -> kernel -> userspace, all read through the card
        await region.wait_console(name, r"BMAAS-IDLE")
        console = await region.console(name)
        assert "BMAAS-GUEST-READY" in console
        after = re.search(r"LOCAL-AFTER ([0-9a-f]{32})", console)
        assert after is not None and after.group(1) != ZERO_MIB_MD5
        qemu_pid = int((agent.reconciler.instance_dir(name) / "qemu.pid").read_text())

        await region.action("Stop", name)
        await region.wait_state(name, S.INSTANCE_STATE_STOPPED, 60)
        assert not _alive(qemu_pid)
        await region.action("Start", name)
        await region.wait_state(name, S.INSTANCE_STATE_RUNNING, 60)
        await wait_for(_count(region, name, "BMAAS-IDLE", 2), 150, 0.5)
        await region.action("Reboot", name)
        await region.wait_state(name, S.INSTANCE_STATE_RUNNING, 60)
        await wait_for(_count(region, name, "BMAAS-IDLE", 3), 150, 0.5)

        epoch = (await region.get_host()).cleaning_epoch
        await region.action("Terminate", name)
        await region.wait_state(name, S.INSTANCE_STATE_TERMINATED, 30)
        await wait_for(region.host_available(), 60, 0.2)
        host = await region.get_host()
        assert host.cleaning_epoch == epoch + 1
        assert agent.reconciler.state.wiped_epoch == epoch + 1
        # teardown removed the instance's files, sockets and processes
        assert not agent.reconciler.instance_dir(name).exists()
        assert not list(agent.config.run_dir.glob("*.sock"))
        assert not _alive(qemu_pid)

        # the next tenant's server reads only zeros from the local disk
        tenant, token = await make_tenant(region.clients, "next-tenant")
        other = dataclasses.replace(region, tenant=tenant, tenant_md=bearer(token))
        second = await other.create(writer)
        await other.wait_state(second, S.INSTANCE_STATE_RUNNING)
        match = await other.wait_console(second, r"LOCAL-BEFORE ([0-9a-f]{32})")
        assert match.group(1) == ZERO_MIB_MD5
        await other.action("Terminate", second)
        await wait_for(region.host_available(), 60, 0.2)
    assert not list(agent.config.run_dir.glob("*"))


def _entries(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def _alive(pid: int) -> bool:
    """*pid* runs (a zombie waiting for init to reap it does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _count(region: Region, name: str, marker: str, n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return (await region.console(name)).count(marker) >= n

    return check


async def test_bad_images_fail_the_instance_and_leave_the_host_reusable(
    region: Region, guest_image: GuestImage, tmp_path: Path
) -> None:
    idle = "echo BMAAS-IDLE\nwhile true; do sleep 1; done\n"
    good = disk_with(guest_image, idle, tmp_path / "g.raw")
    junk = tmp_path / "junk.raw"
    junk.write_bytes(b"this is not a disk image" * 1000)
    any_sum = "sha256:" + "1" * 64
    cases = [
        (await region.register_image("missing", tmp_path / "nope.raw", checksum=any_sum), "not"),
        (await region.register_image("wrong-sum", good, checksum=any_sum), "checksum"),
        (await region.register_image("junk", junk), "boot"),
    ]
    async with qemu_agent(region, tmp_path / "agent", guest_image) as agent:
        for image, expected in cases:
            name = await region.create(image)
            inst = await region.wait_state(name, S.INSTANCE_STATE_FAILED, 60)
            assert expected in inst.failure_reason.lower(), inst.failure_reason
            await region.action("Terminate", name)
            await wait_for(region.host_available(), 60, 0.2)
            assert not agent.reconciler.instance_dir(name).exists()
            assert not list(agent.config.run_dir.glob("*.sock"))
        # and a good image still boots on the same host
        ok = await region.register_image("good", good)
        name = await region.create(ok)
        await region.wait_state(name, S.INSTANCE_STATE_RUNNING)
        await region.wait_console(name, "BMAAS-IDLE")
        await region.action("Terminate", name)
        await wait_for(region.host_available(), 60, 0.2)


HOTPLUG = """
echo BMAAS-IDLE
while [ ! -b /dev/vdc ]; do sleep 0.3; done
s0=$(cat /sys/block/vdc/size)
echo "HOTPLUG-SEEN sectors=$s0"
dd if=/dev/urandom of=/tmp/data bs=64k count=16 2>/dev/null
dd if=/tmp/data of=/dev/vdc bs=64k count=16 conv=fsync 2>/dev/null
echo "HOTPLUG-WROTE $(md5sum /tmp/data | cut -c1-32)"
while [ "$(cat /sys/block/vdc/size)" = "$s0" ]; do sleep 0.3; done
echo "RESIZED sectors=$(cat /sys/block/vdc/size)"
while [ -b /dev/vdc ]; do sleep 0.3; done
echo HOTPLUG-GONE
while true; do sleep 1; done
"""


async def test_attach_resize_detach_a_volume_on_a_running_instance(
    region: Region, guest_image: GuestImage, tmp_path: Path
) -> None:
    image = await region.register_image("hp", disk_with(guest_image, HOTPLUG, tmp_path / "h.raw"))
    c, md = region.clients, region.tenant_md
    vol = await c.tenant.CreateVolume(
        tenant_pb2.CreateVolumeRequest(
            request_id=str(uuid.uuid4()),
            volume=common_pb2.Volume(name=f"{region.tenant}/volumes/data1", size_gib=1),
        ),
        metadata=md,
    )
    async with qemu_agent(region, tmp_path / "agent", guest_image) as agent:
        name = await region.create(image)
        await region.wait_state(name, S.INSTANCE_STATE_RUNNING)
        await region.wait_console(name, "BMAAS-IDLE")

        await c.tenant.AttachVolume(
            tenant_pb2.AttachVolumeRequest(name=vol.name, instance=name), metadata=md
        )
        seen = await region.wait_console(name, r"HOTPLUG-SEEN sectors=(\d+)", 90)
        assert int(seen.group(1)) == (1 << 30) // 512
        wrote = await region.wait_console(name, r"HOTPLUG-WROTE ([0-9a-f]{32})", 60)

        await c.tenant.ResizeVolume(
            tenant_pb2.ResizeVolumeRequest(name=vol.name, size_gib=2), metadata=md
        )
        resized = await region.wait_console(name, r"RESIZED sectors=(\d+)", 60)
        assert int(resized.group(1)) == (2 << 30) // 512

        await c.tenant.DetachVolume(tenant_pb2.DetachVolumeRequest(name=vol.name), metadata=md)
        await region.wait_console(name, "HOTPLUG-GONE", 90)
        # the data is on the cloud disk, the guest's server is still running
        path = agent.reconciler.volume_path(vol.name)
        assert _md5_head(path, 1 << 20) == wrote.group(1)
        assert (await region.instance(name)).state == S.INSTANCE_STATE_RUNNING
        assert not list(agent.config.run_dir.glob(f"*{_disk_id(vol.name)}*"))
        await region.action("Terminate", name)
        await wait_for(region.host_available(), 60, 0.2)
    assert path.exists()  # a tenant's volume outlives the instance


def _md5_head(path: Path, size: int) -> str:
    with path.open("rb") as f:
        return hashlib.md5(f.read(size)).hexdigest()


def _disk_id(volume: str) -> str:
    return hashlib.sha256(volume.encode()).hexdigest()[:10]


BLOCKS = 300
CRASH = f"""
echo BMAAS-IDLE
i=0
: > /tmp/sums
while [ $i -lt {BLOCKS} ]; do
  dd if=/dev/urandom of=/tmp/b bs=64k count=1 2>/dev/null
  dd if=/tmp/b of=/dev/vdb bs=64k seek=$i count=1 conv=fsync 2>/dev/null
  md5sum /tmp/b | cut -c1-32 >> /tmp/sums
  [ $i = 10 ] && echo CRASH-WRITING
  i=$((i+1))
done
echo 3 > /proc/sys/vm/drop_caches
i=0
bad=0
while [ $i -lt {BLOCKS} ]; do
  got=$(dd if=/dev/vdb bs=64k skip=$i count=1 2>/dev/null | md5sum | cut -c1-32)
  want=$(sed -n "$((i+1))p" /tmp/sums)
  [ "$got" = "$want" ] || bad=$((bad+1))
  i=$((i+1))
done
echo "CRASH-VERIFY bad=$bad sums=$(md5sum /tmp/sums | cut -c1-32)"
while true; do sleep 1; done
"""


class QemuAgentProcess:
    """``bmaas-agent`` as a process (qemu driver), so a test can ``kill -9`` it."""

    def __init__(self, region: Region, state: Path, guest_image: GuestImage) -> None:
        state.mkdir(parents=True, exist_ok=True)
        self.metrics_port = free_port()
        self.run_dir = AGENT_RUN_ROOT / hashlib.sha256(str(state).encode()).hexdigest()[:10]
        cred = state.parent / "credential"
        cred.write_text(region.credential)
        cred.chmod(0o600)  # the agent refuses a credential others can read
        toml = state.parent / "agent.toml"
        toml.write_text(
            'power_driver = "qemu"\n'
            f'probe_kernel = "{guest_image.kernel}"\n'
            f'run_dir = "{self.run_dir}"\n'
            "server_memory_mib = 512\nshutdown_grace = 1.0\nresync = 0.5\nmax_backoff = 1.0\n"
            f'metrics = "127.0.0.1:{self.metrics_port}"\n'
            '[[local_disks]]\nname = "nvme0"\nsize_gib = 1\n'
        )
        self.log = state.parent / "agent.log"
        self.argv = [
            sys.executable, "-m", "host_agent.main",
            "--control-plane", f"127.0.0.1:{region.port}",
            "--host-id", region.host.split("/")[1],
            "--credential-file", str(cred),
            "--state-dir", str(state),
            "--config", str(toml),
            *tls_flags(default_pki().client_tls()),
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=log)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)


async def test_agent_killed_during_guest_writes_is_adopted_and_no_write_is_lost(
    region: Region, guest_image: GuestImage, tmp_path: Path
) -> None:
    image = await region.register_image("crash", disk_with(guest_image, CRASH, tmp_path / "c.raw"))
    state = tmp_path / "agent" / "state"
    agent = QemuAgentProcess(region, state, guest_image)
    agent.start()
    try:
        name = await region.create(image)
        await region.wait_state(name, S.INSTANCE_STATE_RUNNING)
        await region.wait_console(name, "CRASH-WRITING", 150)
        workdir = state / "instances" / _short(name)
        qemu_pid = int((workdir / "qemu.pid").read_text())
        local = next(agent.run_dir.glob(f"*-v{_short('local/nvme0')[:10]}.pid"))
        backend_pid = int(local.read_text())

        agent.kill()  # the management plane dies ...
        os.kill(backend_pid, signal.SIGKILL)  # ... and so does the local disk's back-end
        await asyncio.sleep(1.5)
        assert _alive(qemu_pid)  # the server does not notice the agent
        agent.start()  # a new agent adopts the server and restarts the back-end

        verify = await region.wait_console(name, r"CRASH-VERIFY bad=(\d+) sums=([0-9a-f]{32})", 240)
        assert verify.group(1) == "0"
        disk = state / "local" / "nvme0.img"
        assert _block_sums(disk, BLOCKS) == verify.group(2)  # every write reached the disk once
        assert int((workdir / "qemu.pid").read_text()) == qemu_pid  # adopted, not restarted
        assert int(local.read_text()) != backend_pid  # the back-end was restarted
        assert (await region.console(name)).count("BMAAS-GUEST-READY") == 1  # never rebooted
        assert (await region.instance(name)).state == S.INSTANCE_STATE_RUNNING

        # the new agent's metrics: the local disk's back-end saw the writes it served
        await asyncio.sleep(1.5)  # back-ends write their counters every second
        scraped = await asyncio.to_thread(_scrape, agent.metrics_port)
        volume = 'volume="local/nvme0"'
        assert (
            scraped[
                f'bmaas_agent_device_connected{{device="v{_short("local/nvme0")[:10]}",{volume}}}'
            ]
            == 1
        )
        assert _sample(scraped, "bmaas_agent_device_io_bytes_total", volume, 'direction="read"') > 0
        assert _sample(scraped, "bmaas_agent_device_request_seconds_count", volume) > 0
        assert _sample(scraped, "bmaas_agent_dataplane_cpu_seconds_total", volume) > 0
        assert _sample(scraped, "bmaas_agent_power_on") == 1

        await region.action("Terminate", name)
        await wait_for(region.host_available(), 60, 0.2)
        assert not _alive(qemu_pid)
    finally:
        agent.stop()
        kill_processes_under(state, agent.run_dir)


def _scrape(port: int) -> dict[str, float]:
    """``name{labels} -> value`` of every sample the agent's /metrics serves."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def _sample(scraped: dict[str, float], name: str, *labels: str) -> float:
    """The sum of *name*'s samples whose labels include all of *labels*."""
    return sum(
        v
        for k, v in scraped.items()
        if k.split("{")[0] == name and all(label in k for label in labels)
    )


def _short(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:12]


def _block_sums(disk: Path, blocks: int) -> str:
    lines = []
    with disk.open("rb") as f:
        for _ in range(blocks):
            lines.append(hashlib.md5(f.read(64 * 1024)).hexdigest() + "\n")
    return hashlib.md5("".join(lines).encode()).hexdigest()


@pytest.fixture
def full_volume_dir(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs: too small for any boot disk (unmounted afterwards)."""
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "bmaas-test", str(small)], check=True)
    try:
        yield small
    finally:
        subprocess.run(["umount", str(small)], check=True)


async def test_a_full_disk_fails_the_instance_and_leaves_the_host_reusable(
    region: Region, guest_image: GuestImage, tmp_path: Path, full_volume_dir: Path
) -> None:
    """The agent's volume directory is full: the boot disk's clone runs out
    of space, the instance fails with that reason, nothing is left."""
    image = await region.register_image(
        "big", disk_with(guest_image, "echo BMAAS-IDLE\n", tmp_path / "big.raw")
    )
    async with qemu_agent(
        region, tmp_path / "agent", guest_image, volume_dir_=full_volume_dir
    ) as agent:
        name = await region.create(image)
        inst = await region.wait_state(name, S.INSTANCE_STATE_FAILED, 60)
        assert "no space left" in inst.failure_reason.lower(), inst.failure_reason
        assert _entries(full_volume_dir) == []  # the partial clone is gone
        await region.action("Terminate", name)
        await wait_for(region.host_available(), 60, 0.2)
        assert not agent.reconciler.instance_dir(name).exists()
        assert not list(agent.config.run_dir.glob("*.sock"))
