"""RUNNING means the guest runs: a real guest that panics, through the API.

A real region (etcd, control plane, controllers), a real agent with the qemu
power driver, a server stand-in booting the instance's disk through OVMF.
The guest panics on its first boot (``sysrq`` crash); the server's
``pvpanic`` device stops it in ``guest-panicked``, the agent reads that over
QMP and reports FAILED with the console's panic line, and the tenant API
shows the instance FAILED with that reason while the agent keeps looking.
A tenant ``RebootInstance`` resets the server; on its second boot the
guest finds the mark it left on its boot disk and stays up: RUNNING again,
the reason cleared.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bmaas.v1 import common_pb2
from host_agent import metrics
from tools.region.guest import GuestImage, disk_with
from tools.region.region import Region, qemu_agent
from tools.region.wait import wait_for

pytestmark = pytest.mark.asyncio(loop_scope="session")
S = common_pb2

# 512 MiB into the 1 GiB boot disk: past the image's partitions
PANIC_ONCE = """
MARK=1048576
if [ "$(dd if=/dev/vda bs=512 skip=$MARK count=1 2>/dev/null | head -c 8)" = PANICKED ]; then
  echo BMAAS-RECOVERED
  while true; do sleep 1; done
fi
printf PANICKED | dd of=/dev/vda bs=512 seek=$MARK conv=notrunc 2>/dev/null
sync
echo BMAAS-PANICKING
echo c > /proc/sysrq-trigger
"""


def _reconcile_runs() -> float:
    """How many reconcile runs this process has finished (every agent in it)."""
    for metric in metrics.RECONCILE_SECONDS.collect():
        for sample in metric.samples:
            if sample.name.endswith("_count"):
                return sample.value
    return 0.0


async def test_a_panicked_guest_is_failed_with_its_reason_and_a_reboot_recovers_it(
    region: Region, guest_image: GuestImage, tmp_path: Path
) -> None:
    image = await region.register_image(
        "panic-once", disk_with(guest_image, PANIC_ONCE, tmp_path / "panic.raw")
    )
    async with qemu_agent(region, tmp_path / "agent", guest_image) as agent:
        name = await region.create(image)
        await region.wait_console(name, r"BMAAS-PANICKING")
        failed = await region.wait_state(name, S.INSTANCE_STATE_FAILED, 60)
        assert failed.failure_reason.startswith("the guest panicked"), failed.failure_reason
        assert "Kernel panic - not syncing" in failed.failure_reason
        # the agent keeps observing the dead guest and never calls it RUNNING
        runs = _reconcile_runs()

        async def three_more_runs() -> bool:
            return _reconcile_runs() >= runs + 3

        await wait_for(three_more_runs, 30, 0.2)
        assert (await region.instance(name)).state == S.INSTANCE_STATE_FAILED
        # the server stays (its disks hold the tenant's data): only paused
        assert (agent.reconciler.instance_dir(name) / "qemu.pid").exists()

        await region.action("Reboot", name)
        running = await region.wait_state(name, S.INSTANCE_STATE_RUNNING, 60)
        assert running.failure_reason == ""
        await region.wait_console(name, r"BMAAS-RECOVERED")
        assert (await region.instance(name)).state == S.INSTANCE_STATE_RUNNING

        await region.action("Terminate", name)
        await region.wait_state(name, S.INSTANCE_STATE_TERMINATED, 60)
        await wait_for(region.host_available(), 60, 0.2)
