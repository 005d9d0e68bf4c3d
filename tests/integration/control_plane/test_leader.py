"""Leader election with real replicas: exactly one leads; a clean stop hands
over at once; a killed leader (SIGKILL, separate process) is replaced within
the lease TTL."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
import time

import pytest

from control_plane.controllers import ControllerConfig, ControllerManager
from tests.harness.store import StoreFactory, cp_etcd, eventually, root, store, store_factory
from tools.region.etcd import EtcdServer

__all__ = ["cp_etcd", "root", "store", "store_factory"]
pytestmark = pytest.mark.asyncio(loop_scope="session")

TTL = 3
CONFIG = ControllerConfig(lease_ttl=TTL, resync_period=5.0)


async def test_exactly_one_of_two_managers_leads_and_stop_hands_over(
    store_factory: StoreFactory,
) -> None:
    a = ControllerManager(await store_factory(), identity="a", config=CONFIG)
    b = ControllerManager(await store_factory(), identity="b", config=CONFIG)
    await a.start()
    await b.start()
    try:
        await asyncio.wait_for(
            asyncio.wait(
                [asyncio.ensure_future(a.wait_running()), asyncio.ensure_future(b.wait_running())],
                return_when=asyncio.FIRST_COMPLETED,
            ),
            10,
        )
        await asyncio.sleep(TTL)  # several keepalive rounds: still exactly one
        assert [a.is_leader, b.is_leader].count(True) == 1
        leader, follower = (a, b) if a.is_leader else (b, a)
        assert leader.scheduler is not None and follower.scheduler is None
        assert await leader.store.elections.leader(CONFIG.election) == leader.identity

        started = time.monotonic()
        await leader.stop()
        await asyncio.wait_for(follower.wait_running(), TTL)
        handover = time.monotonic() - started
        assert follower.is_leader and not leader.is_leader
        assert handover < 1.0  # resigned: no need to wait for the lease to expire
        assert follower.elector.terms == 1
    finally:
        await a.stop()
        await b.stop()


_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from control_plane.controllers import ControllerConfig, ControllerManager
    from control_plane.store import Store

    async def main() -> None:
        store = await Store.connect("127.0.0.1", int(sys.argv[1]), root=sys.argv[2])
        mgr = ControllerManager(store, identity="child", config=ControllerConfig(lease_ttl={ttl}))
        await mgr.start()
        await mgr.wait_running()
        print("LEADING", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
    """
).replace("{ttl}", str(TTL))


async def test_killed_leader_is_replaced_within_the_lease_ttl(
    cp_etcd: EtcdServer, root: str, store_factory: StoreFactory
) -> None:
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _CHILD,
        str(cp_etcd.port),
        root,
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 30)
        assert line.strip() == b"LEADING"
        survivor = ControllerManager(await store_factory(), identity="survivor", config=CONFIG)
        await survivor.start()
        try:
            await asyncio.sleep(TTL)
            assert not survivor.is_leader  # the child holds the lease
            assert await survivor.store.elections.leader(CONFIG.election) == "child"
            child.send_signal(signal.SIGKILL)
            await child.wait()
            killed = time.monotonic()
            await asyncio.wait_for(survivor.wait_running(), TTL + 2)
            handover = time.monotonic() - killed
            assert survivor.is_leader
            assert handover <= TTL, f"handover took {handover:.2f}s"
            print(f"\nhandover after SIGKILL of the leader: {handover:.2f}s (TTL {TTL}s)")

            async def seat_is_ours() -> bool:
                return await survivor.store.elections.leader(CONFIG.election) == "survivor"

            await eventually(seat_is_ours, timeout=2)
        finally:
            await survivor.stop()
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
