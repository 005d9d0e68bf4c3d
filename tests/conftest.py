"""Fixtures shared by every test layer.

Real components only: ``etcd`` is a real etcd server, ``ceph`` a real
single-node Ceph cluster (one per session; tests make their own images with
``rbd_image``), ``netns`` a real
network namespace, ``guest_image``/``qemu_server`` a real kernel booted under
QEMU (KVM when it boots a kernel here, TCG otherwise).  Each fixture removes
exactly what it created.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from host_agent.power.accel import firmware_accelerator
from host_agent.power.qemu import OVMF_CODE, OVMF_VARS, QemuServer, ServerSpec
from tools.region.agents import AGENT_RUN_ROOT
from tools.region.ceph import CephCluster
from tools.region.etcd import EtcdServer
from tools.region.guest import GuestImage
from tools.region.netns import NetNamespace
from tools.region.paths import ROOT

# Property tests check behaviour, not speed: hypothesis's default 200 ms
# deadline per example fails them on a loaded machine (timing belongs in bench/).
settings.register_profile("bmaas", deadline=None)
settings.load_profile("bmaas")


@pytest.fixture(scope="session", autouse=True)
def agent_run_dirs() -> Iterator[None]:
    """Agents started by tests keep their sockets under ``AGENT_RUN_ROOT``
    (``tools.region.agents``); whatever is left there goes at the end."""
    yield
    shutil.rmtree(AGENT_RUN_ROOT, ignore_errors=True)
    with contextlib.suppress(OSError):  # the shared parent, once no session uses it
        AGENT_RUN_ROOT.parent.rmdir()


@pytest.fixture
def etcd() -> Iterator[EtcdServer]:
    """A fresh single-node etcd server for one test."""
    with EtcdServer() as server:
        yield server


@pytest.fixture
async def etcd_client(etcd: EtcdServer) -> AsyncIterator[Any]:
    """An aetcd client connected to the per-test etcd server."""
    import aetcd

    async with aetcd.Client(host=etcd.host, port=etcd.port) as client:
        yield client


@pytest.fixture(scope="session")
def ceph() -> Iterator[CephCluster]:
    """One single-node Ceph (a monitor and a bluestore OSD) for the session."""
    with CephCluster() as cluster:
        yield cluster


@pytest.fixture
def rbd_image(ceph: CephCluster, request: pytest.FixtureRequest) -> Iterator[Callable[[int], str]]:
    """A factory of RBD images in ``ceph.pool`` named after the test, all removed after."""
    made: list[str] = []

    def make(size: int) -> str:
        name = f"{request.node.name[:40]}-{len(made)}".replace("[", "-").replace("]", "")
        ceph.create_image(name, size)
        made.append(name)
        return name

    yield make
    for name in made:
        ceph.remove_image(name)


@pytest.fixture
def netns() -> Iterator[Callable[[str], NetNamespace]]:
    """A factory of network namespaces (one per emulated host), all removed after."""
    created: list[NetNamespace] = []

    def make(tag: str = "host") -> NetNamespace:
        ns = NetNamespace(tag).create()
        created.append(ns)
        return ns

    yield make
    for ns in created:
        ns.close()


@pytest.fixture(scope="session")
def guest_image() -> GuestImage:
    """The cached guest image (built on first use by images/build.sh)."""
    return GuestImage.build()


@pytest.fixture(scope="session")
def qemu_accel(guest_image: GuestImage) -> str:
    """``kvm`` when KVM runs the UEFI firmware here (so the guest kernel too), else ``tcg``."""
    return firmware_accelerator(OVMF_CODE, OVMF_VARS, cache_dir=ROOT / ".cache")


QemuFactory = Callable[..., Awaitable[QemuServer]]


@pytest.fixture
async def qemu_server(
    tmp_path: Path, guest_image: GuestImage, qemu_accel: str
) -> AsyncIterator[QemuFactory]:
    """Start stand-in servers: ``await qemu_server(script="...", disks=(...))``.

    The guest runs *script* as /bmaas/cmd; the serial console goes to a file
    in the test's tmp dir.  Every QEMU started is killed on teardown.
    """
    started: list[QemuServer] = []

    async def start(*, script: str, name: str = "server", **spec: Any) -> QemuServer:
        initrd = guest_image.initrd_with(script, tmp_path / f"{name}-initrd.img")
        server = QemuServer(
            ServerSpec(
                name=name,
                serial_log=tmp_path / f"{name}-serial.log",
                accel=qemu_accel,
                kernel=guest_image.kernel,
                initrd=initrd,
                append=spec.pop("append", "console=ttyS0 panic=-1 quiet"),
                **spec,
            )
        )
        started.append(server)
        await server.start()
        return server

    yield start
    for server in started:
        await server.aclose()
