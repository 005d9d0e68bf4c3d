"""Store fixtures for the control-plane core tests (import them into a test
module: ``from tests.harness.store import cp_etcd, root, store, store_factory``).

One real etcd per test module (starting one takes a while); every test gets
its own key root (``/t/{uuid}``) so tests never see each other's keys.
The async fixtures live on the session event loop, like the API tests'
(grpc.aio channels must stay on the loop that made them); test modules
using them set ``pytestmark = pytest.mark.asyncio(loop_scope="session")``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
import pytest_asyncio

from control_plane.domain import Host, HostState, InstanceType, Quota, Tenant, fake_hardware
from control_plane.store import Store
from tools.region.etcd import EtcdServer

StoreFactory = Callable[[], Awaitable[Store]]


@pytest.fixture(scope="module")
def cp_etcd() -> Iterator[EtcdServer]:
    with EtcdServer(name="bmaas-cp") as server:
        yield server


@pytest.fixture
def root() -> str:
    return f"/t/{uuid.uuid4().hex[:12]}"


@pytest_asyncio.fixture(loop_scope="session")
async def store_factory(cp_etcd: EtcdServer, root: str) -> AsyncIterator[StoreFactory]:
    """Independent Store instances (own gRPC channel each) on one key root,
    as separate control-plane replicas would have."""
    made: list[Store] = []

    async def make() -> Store:
        s = await Store.connect(cp_etcd.host, cp_etcd.port, root=root)
        made.append(s)
        return s

    yield make
    for s in made:
        await s.aclose()


@pytest_asyncio.fixture(loop_scope="session")
async def store(store_factory: StoreFactory) -> Store:
    return await store_factory()


async def seed_hosts(
    store: Store,
    n: int,
    *,
    racks: int = 4,
    zone: str = "z1",
    host_class: str = "bm-std",
    state: HostState = HostState.AVAILABLE,
    prefix: str = "h",
) -> list[Host]:
    hosts = []
    for i in range(n):
        host = Host(
            id=f"{prefix}{i:05d}",
            zone=zone,
            rack=f"r{i % racks}",
            host_class=host_class,
            hardware=fake_hardware(),
            state=state,
        )
        hosts.append(await store.create(host))
    return hosts


async def seed_catalog(store: Store, *, tenant: str = "t1", max_instances: int = 1000) -> None:
    await store.create(Tenant(id=tenant, quota=Quota(max_instances=max_instances)))
    await store.create(InstanceType(id="m1", host_class="bm-std", cpus=64, memory_gib=256))


async def eventually(
    probe: Callable[[], Awaitable[bool]],
    *,
    timeout: float = 10.0,
    interval: float = 0.05,
    explain: Callable[[], Awaitable[str]] | None = None,
) -> float:
    """Poll *probe* until it returns True; the seconds it took (AssertionError on
    timeout, with what *explain* says about the state it was stuck in)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not await probe():
        if loop.time() - start > timeout:
            why = f": {await explain()}" if explain is not None else ""
            raise AssertionError(f"condition not reached within {timeout}s{why}")
        await asyncio.sleep(interval)
    return loop.time() - start
