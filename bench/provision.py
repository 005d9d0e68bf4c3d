"""Provisioning benchmark: CreateInstance to a booted guest, terminate to AVAILABLE.

Everything is real: etcd, the control plane (API + controllers, in this
process), one ``bmaas-agent`` (the ``Agent`` library, qemu power driver, in
this process) whose card serves the boot disk with ``offload-blk`` to a QEMU
server booting it through OVMF, and a 100 GiB sparse local disk that is
wiped on every release.  For each of ``--runs`` instances:

1. ``CreateInstance`` through the tenant API (t0);
2. the agent's timeline (``Reconciler.timeline``) gives when it started
   provisioning, fetched the image (the cache is emptied before each run,
   so every fetch is cold), cloned the boot disk, started the back-ends and
   powered the server on;
3. the server's console file, polled every 20 ms, gives when the kernel
   printed its banner (firmware + boot loader done) and when userspace
   printed ``BMAAS-GUEST-READY`` (kernel + initramfs done);
4. the guest writes 64 MiB to the local disk; ``TerminateInstance`` (t1),
   then the host is polled through the operator API until AVAILABLE again:
   teardown, wipe of the 100 GiB local disk with read-back verification,
   and the control plane's reaction to the wipe report.

``--clone`` measures only the boot-disk clone, file back-end against RBD,
for an 8 GiB image (``--clone-gib``) holding 64 MiB of data at its start
and 1 MiB every 512 MiB: ``clone_volume`` onto ``--workdir``'s file system
(reflink where it can, else ``copy_file_range`` over data extents), and on
a single-node Ceph started for the run, the agent's one-time import
(``RbdPool.ensure_parent``, reported apart) then a layered clone per run
(``ensure_clone``).  Target: the RBD clone under 0.5 s whatever the size.
It writes ``bench/results/provision_clone.json`` and its own section.

Writes ``bench/results/provision.json`` and the section between
``<!-- provision:begin -->`` and ``<!-- provision:end -->`` of
``docs/benchmarks.md``.  Target: everything but firmware and kernel under
2 s; terminate to AVAILABLE under 5 s.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import hashlib
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import grpc

from bench.doc import write_section
from bmaas.v1 import common_pb2, operator_pb2, operator_pb2_grpc, tenant_pb2, tenant_pb2_grpc
from bmaas_tls import aio_channel
from control_plane.api.server import ApiConfig, ApiServer
from control_plane.controllers.config import ControllerConfig
from control_plane.controllers.manager import ControllerManager
from control_plane.store import Store
from host_agent.agent import Agent
from host_agent.config import AgentConfig, LocalDisk
from host_agent.storage.clone import clone_volume
from host_agent.storage.rbd import CephTarget, RbdPool
from tools.diskimage import build_disk_image
from tools.region.ceph import CephCluster
from tools.region.etcd import EtcdServer
from tools.region.guest import GuestImage
from tools.region.pki import default_pki

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "bench" / "results" / "provision.json"
TOKEN = "bench-operator-token-0123456789abcdef"
RUN_DIR = Path("/run/bmaas-bench-provision")
GUEST = """
dd if=/dev/urandom of=/dev/vdb bs=1M count=64 conv=fsync 2>/dev/null
echo BENCH-WROTE
while true; do sleep 1; done
"""
STEPS = (
    ("api_to_agent", "create", "provision_start"),
    ("image_fetch", "provision_start", "image_fetched"),
    ("clone", "image_fetched", "cloned"),
    ("device_start", "cloned", "devices_started"),
    ("power_on", "devices_started", "powered_on"),
    ("firmware", "powered_on", "kernel"),
    ("kernel", "kernel", "userspace"),
)
CARD_STEPS = ("api_to_agent", "image_fetch", "clone", "device_start", "power_on")


def _md(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def _empty(directory: Path) -> None:
    for entry in directory.iterdir():
        entry.unlink()


async def _poll_console(path: Path, marks: dict[str, float], deadline: float) -> None:
    """Stamp ``kernel`` and ``userspace`` when the console shows them."""
    while time.monotonic() < deadline:
        text = _read(path)
        now = time.time()
        if "kernel" not in marks and b"Linux version" in text:
            marks["kernel"] = now
        if b"BMAAS-GUEST-READY" in text:
            marks.setdefault("kernel", now)
            marks["userspace"] = now
            return
        await asyncio.sleep(0.02)
    raise TimeoutError(f"the guest did not reach userspace; console tail: {text[-500:]!r}")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    image = GuestImage.build()
    work = Path(tempfile.mkdtemp(prefix="bmaas-bench-provision-", dir=args.workdir))
    disk = build_disk_image(
        kernel=image.kernel,
        initrd=image.initrd_with(GUEST, work / "initrd"),
        out=work / "boot.raw",
        cmdline="console=ttyS0 panic=-1",
    )
    checksum = "sha256:" + hashlib.sha256(disk.read_bytes()).hexdigest()
    runs: list[dict[str, float]] = []
    try:
        await _region(args, image, work, disk, checksum, runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(RUN_DIR, ignore_errors=True)
    return _summary(runs, args)


async def _region(
    args: argparse.Namespace,
    image: GuestImage,
    work: Path,
    disk: Path,
    checksum: str,
    runs: list[dict[str, float]],
) -> None:
    with EtcdServer() as etcd:
        store = await Store.connect(etcd.host, etcd.port)
        pki = default_pki()
        api = ApiServer(
            store, ApiConfig(listen="127.0.0.1:0", operator_token=TOKEN, tls=pki.server_tls())
        )
        port = await api.start()
        manager = ControllerManager(
            store, identity="bench", config=ControllerConfig(), scheduler=api.scheduler
        )
        await manager.start()
        channel = aio_channel(f"127.0.0.1:{port}", pki.client_tls())
        op = operator_pb2_grpc.OperatorServiceStub(channel)
        tenant = tenant_pb2_grpc.TenantServiceStub(channel)
        opmd = _md(TOKEN)
        try:
            await op.CreateTenant(
                operator_pb2.CreateTenantRequest(
                    tenant=common_pb2.Tenant(
                        name="tenants/bench", quota=common_pb2.Quota(max_instances=100)
                    )
                ),
                metadata=opmd,
            )
            tok = await op.IssueTenantToken(
                operator_pb2.IssueTenantTokenRequest(tenant="tenants/bench"), metadata=opmd
            )
            await op.CreateInstanceType(
                operator_pb2.CreateInstanceTypeRequest(
                    instance_type=common_pb2.InstanceType(
                        name="instanceTypes/bm", host_class="bm", cpus=1, memory_gib=1
                    )
                ),
                metadata=opmd,
            )
            await op.RegisterImage(
                operator_pb2.RegisterImageRequest(
                    image=common_pb2.Image(
                        name="images/bench",
                        source_uri=f"file://{disk}",
                        size_gib=1,
                        checksum=checksum,
                    )
                ),
                metadata=opmd,
            )
            enrolled = await op.EnrollHost(
                operator_pb2.EnrollHostRequest(
                    request_id=str(uuid.uuid4()),
                    host=common_pb2.Host(
                        name="hosts/bench-1",
                        zone="z1",
                        rack="r1",
                        host_class="bm",
                        power_driver="qemu",
                        hardware=common_pb2.HardwareProfile(cpus=2, memory_gib=1),
                    ),
                ),
                metadata=opmd,
            )
            config = AgentConfig(
                host_id="bench-1",
                endpoints=(f"127.0.0.1:{port}",),
                credential=enrolled.agent_credential,
                state_dir=work / "agent",
                run_dir_=RUN_DIR,
                power_driver="qemu",
                probe_kernel=image.kernel,
                server_memory_mib=512,
                shutdown_grace=0.0,
                resync=0.5,
                local_disks=(LocalDisk(name="nvme0", size_gib=args.local_gib),),
                tls=pki.client_tls(),
            )
            tmd = _md(tok.token)
            async with Agent(config) as agent:
                for i in range(args.runs):
                    runs.append(await _one(i, agent, op, tenant, opmd, tmd))
                    print(json.dumps({"run": i, **_durations(runs[-1])}), flush=True)
        finally:
            await channel.close()
            await manager.stop()
            await api.stop(0.5)
            await store.aclose()


async def _one(
    i: int,
    agent: Agent,
    op: operator_pb2_grpc.OperatorServiceStub,
    tenant: tenant_pb2_grpc.TenantServiceStub,
    opmd: tuple[tuple[str, str], ...],
    tmd: tuple[tuple[str, str], ...],
) -> dict[str, float]:
    await asyncio.to_thread(_empty, agent.reconciler.images.directory)  # a cold fetch
    marks: dict[str, float] = {"create": time.time()}
    while True:
        try:
            inst = await tenant.CreateInstance(
                tenant_pb2.CreateInstanceRequest(
                    request_id=str(uuid.uuid4()),
                    instance=common_pb2.Instance(
                        name=f"tenants/bench/instances/run-{i}-{uuid.uuid4().hex[:4]}",
                        instance_type="instanceTypes/bm",
                        image="images/bench",
                    ),
                ),
                metadata=tmd,
            )
            break
        except grpc.aio.AioRpcError as exc:  # the scheduler has not seen the host free yet
            if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise
            await asyncio.sleep(0.05)
    marks["create"] = time.time()
    console = agent.reconciler.instance_dir(inst.name) / "console.log"
    await _poll_console(console, marks, time.monotonic() + 300)
    marks.update(agent.reconciler.timeline.get(inst.name, {}))
    for _ in range(3000):
        if b"BENCH-WROTE" in _read(console):
            break
        await asyncio.sleep(0.05)
    marks["terminate"] = time.time()
    await tenant.TerminateInstance(tenant_pb2.InstanceActionRequest(name=inst.name), metadata=tmd)
    while True:
        host = await op.GetHost(tenant_pb2.GetRequest(name="hosts/bench-1"), metadata=opmd)
        if host.state == common_pb2.HOST_STATE_AVAILABLE:
            break
        await asyncio.sleep(0.02)
    marks["available"] = time.time()
    return marks


def _durations(marks: dict[str, float]) -> dict[str, float]:
    out = {name: marks[b] - marks[a] for name, a, b in STEPS if a in marks and b in marks}
    out["card_total"] = sum(out.get(s, 0.0) for s in CARD_STEPS)
    out["create_to_userspace"] = marks["userspace"] - marks["create"]
    out["terminate_to_available"] = marks["available"] - marks["terminate"]
    return {k: round(v, 3) for k, v in out.items()}


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def _summary(runs: list[dict[str, float]], args: argparse.Namespace) -> dict[str, Any]:
    durations = [_durations(r) for r in runs]
    keys = [name for name, _, _ in STEPS] + ["card_total", "create_to_userspace"]
    keys.append("terminate_to_available")
    return {
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {_cpus()} CPUs, kernel {platform.release()}",
        "runs": args.runs,
        "local_disk_gib": args.local_gib,
        "median": {k: round(statistics.median(d[k] for d in durations), 3) for k in keys},
        "p95": {k: round(_p95([d[k] for d in durations]), 3) for k in keys},
        "all": durations,
    }


def _cpus() -> int:
    return len(os.sched_getaffinity(0))


def markdown(result: dict[str, Any]) -> str:
    med, p95 = result["median"], result["p95"]
    rows = [
        ("API to agent (desired state delivered)", "api_to_agent"),
        ("image fetch (cold cache, sha256 verified)", "image_fetch"),
        ("boot disk clone", "clone"),
        ("device back-ends started", "device_start"),
        ("power on (QEMU started)", "power_on"),
        ("**card total (all but firmware and kernel)**", "card_total"),
        ("firmware + boot loader (OVMF, GRUB; TCG)", "firmware"),
        ("kernel + initramfs to userspace (TCG)", "kernel"),
        ("**CreateInstance to userspace**", "create_to_userspace"),
        (f"**terminate to AVAILABLE** ({result['local_disk_gib']} GiB local disk wiped)",
         "terminate_to_available"),
    ]  # fmt: skip
    lines = [
        f"Run {result['time']} on {result['machine']}; {result['runs']} instances, one after "
        "another, on one host. Seconds.",
        "",
        "| step | median | p95 |",
        "| --- | ---: | ---: |",
    ]
    lines += [f"| {label} | {med[k]:.2f} | {p95[k]:.2f} |" for label, k in rows]
    ok_card = med["card_total"] < 2.0
    ok_term = med["terminate_to_available"] < 5.0
    lines += [
        "",
        f"Targets: card total < 2 s: {'met' if ok_card else 'missed'} "
        f"({med['card_total']:.2f} s); terminate to AVAILABLE < 5 s: "
        f"{'met' if ok_term else 'missed'} ({med['terminate_to_available']:.2f} s).",
    ]
    return "\n".join(lines)


CLONE_RESULT = ROOT / "bench" / "results" / "provision_clone.json"


def _sparse_image(path: Path, size: int) -> None:
    with path.open("wb") as f:
        f.truncate(size)
        f.write(os.urandom(64 << 20))
        for offset in range(512 << 20, size, 512 << 20):
            f.seek(offset)
            f.write(os.urandom(1 << 20))


def clone_bench(runs: int, gib: int, workdir: Path) -> dict[str, Any]:
    size = gib << 30
    image = workdir / "image.raw"
    _sparse_image(image, size)
    files = []
    for i in range(runs):
        started = time.monotonic()
        clone_volume(image, workdir / f"clone{i}.img", size_bytes=size)
        files.append(time.monotonic() - started)
        (workdir / f"clone{i}.img").unlink()
    with CephCluster(base_dir=workdir) as ceph:
        target = CephTarget(pool=ceph.pool, conf=ceph.conf_path)
        with RbdPool(target, timeout=30) as pool:
            started = time.monotonic()
            pool.ensure_parent("image.bench@base", image)
            imported = time.monotonic() - started
            rbd_clones = []
            for i in range(runs):
                started = time.monotonic()
                pool.ensure_clone(f"boot.bench.{i}", "image.bench@base", size)
                rbd_clones.append(time.monotonic() - started)
    image.unlink()
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "image_gib": gib,
        "runs": runs,
        "file_clone_s": files,
        "rbd_import_once_s": imported,
        "rbd_clone_s": rbd_clones,
    }


def clone_markdown(r: dict[str, Any]) -> str:
    def med(xs: list[float]) -> str:
        return f"{statistics.median(xs) * 1000:.0f} ms"

    return "\n".join(
        [
            f"Boot-disk clone of a {r['image_gib']} GiB image (64 MiB + 1 MiB every 512 MiB of "
            f"data), median of {r['runs']} ({r['date']}, {r['machine']}):",
            "",
            "| back-end | clone | one-time import |",
            "| --- | --- | --- |",
            f"| file (clone_volume) | {med(r['file_clone_s'])} | - |",
            f"| RBD (layered clone) | {med(r['rbd_clone_s'])} | {r['rbd_import_once_s']:.1f} s |",
            "",
            "Target: RBD clone under 0.5 s whatever the size.",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clone", action="store_true", help="only the boot-disk clone: file vs RBD")
    p.add_argument("--clone-gib", type=int, default=8)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--local-gib", type=int, default=100)
    p.add_argument("--workdir", default=None, help="where state and disks go (not tmpfs)")
    p.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    args = p.parse_args(argv)
    if args.clone:
        with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
            clone = clone_bench(args.runs, args.clone_gib, Path(tmp))
        CLONE_RESULT.parent.mkdir(parents=True, exist_ok=True)
        CLONE_RESULT.write_text(json.dumps(clone, indent=1) + "\n")
        print(clone_markdown(clone))
        if not args.no_doc:
            write_section("provision_clone", "Boot-disk clone: file vs RBD", clone_markdown(clone))
        return 0
    result = asyncio.run(run(args))
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=1) + "\n")
    print(markdown(result))
    if not args.no_doc:
        write_section("provision", "Provisioning (bench/provision.py)", markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
