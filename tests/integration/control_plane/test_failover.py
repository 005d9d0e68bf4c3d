"""Failover of real control-plane processes sharing one etcd.

1. Two replicas; the controllers' leader is SIGKILLed (its lease is not
   revoked).  The other replica takes the seat within the lease TTL (plus a
   small slack for the watch); the host's agent (a ``bmaas-agent`` process
   given both replicas, connected to the killed one) moves to the survivor,
   whose controllers then drive a new instance to RUNNING on that agent's
   report.
2. The only replica is SIGKILLed while creates and a terminate are in flight,
   then restarted at the same address: the hosts' agents reconnect and
   everything converges - no PENDING instance left, every live instance
   RUNNING as its agent reports, every bound host/instance pair agrees, the
   terminated instance's host is wiped by its agent and handed back.

Instances reach RUNNING, and hosts leave CLEANING, only on agent reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path

import aetcd
import grpc

from bmaas.v1 import common_pb2, tenant_pb2
from tests.harness.etcd_dump import etcd_dump
from tools.region.agents import AgentProcess, running_agents
from tools.region.control_plane import Clients, ControlPlaneProcess, bearer
from tools.region.etcd import EtcdServer
from tools.region.wait import wait_for
from tools.region.world import World, build_world

LEASE_TTL = 2
SEAT = b"/bmaas/v1/leases/controllers"


async def leader_identity(etcd: EtcdServer) -> str | None:
    async with aetcd.Client(host=etcd.host, port=etcd.port) as client:
        got = await client.get(SEAT)
    return got.value.decode() if got else None


def pid_of(identity: str) -> int:
    return int(identity.split("-")[-2])


async def instance_state(w: World, clients: Clients, name: str) -> int:
    got = await clients.tenant.GetInstance(tenant_pb2.GetRequest(name=name), metadata=w.md)
    return int(got.state)


async def test_leader_killed_follower_takes_over_within_ttl(
    etcd: EtcdServer, tmp_path: Path
) -> None:
    a = ControlPlaneProcess(etcd, lease_ttl=LEASE_TTL, allow_fake_power=True).start()
    b = ControlPlaneProcess(etcd, lease_ttl=LEASE_TTL, allow_fake_power=True).start()
    agent: AgentProcess | None = None
    try:
        first = await wait_for(lambda: leader_identity(etcd), timeout=10)
        assert first is not None
        by_pid = {a.proc.pid: a, b.proc.pid: b}  # type: ignore[union-attr]
        leader, follower = (a, b) if pid_of(first) == a.proc.pid else (b, a)  # type: ignore[union-attr]
        assert pid_of(first) in by_pid
        async with Clients(follower.port) as c:
            w = await build_world(c, hosts=1)
            ((host_name, cred),) = w.hosts.items()
            # the agent knows both replicas and starts with the leader
            agent = AgentProcess(
                endpoints=(leader.port, follower.port),
                host_id=host_name.removeprefix("hosts/"),
                credential=cred,
                state_dir=tmp_path / "agent",
            ).start()

            async def heartbeating() -> bool:
                host: common_pb2.Host = await c.operator.GetHost(
                    tenant_pb2.GetRequest(name=host_name), metadata=c.op_md
                )
                return host.HasField("last_heartbeat_time")

            await wait_for(heartbeating, timeout=20)

        killed_at = time.monotonic()
        leader.kill()

        async def new_leader() -> str | None:
            ident = await leader_identity(etcd)
            return ident if ident and ident != first else None

        second = await wait_for(new_leader, timeout=LEASE_TTL + 3, interval=0.05)
        took = time.monotonic() - killed_at
        assert pid_of(second) == follower.proc.pid  # type: ignore[union-attr]
        print(f"takeover after {took:.2f}s (lease TTL {LEASE_TTL}s)")
        assert took < LEASE_TTL + 1.0, f"takeover took {took:.2f}s"
        # The new leader's controllers work, and the agent followed the
        # survivor: an instance reaches RUNNING on the agent's report.
        async with Clients(follower.port) as c:
            w.clients = c
            inst = await c.tenant.CreateInstance(
                tenant_pb2.CreateInstanceRequest(
                    instance=common_pb2.Instance(instance_type=w.instance_type, image=w.image)
                ),
                metadata=w.md,
            )
            assert inst.host == host_name

            async def running() -> bool:
                return await instance_state(w, c, inst.name) == common_pb2.INSTANCE_STATE_RUNNING

            await wait_for(running, timeout=20)
    finally:
        if agent is not None:
            print(agent.tail())
            agent.close()
        a.close()
        b.close()


async def test_killed_mid_operation_restart_converges(etcd: EtcdServer, tmp_path: Path) -> None:
    cp = ControlPlaneProcess(etcd, lease_ttl=LEASE_TTL, allow_fake_power=True).start()
    try:
        async with contextlib.AsyncExitStack() as stack:
            c = await stack.enter_async_context(Clients(cp.port))
            w = await build_world(c, hosts=8)
            # in-process agents (fake driver) for the 8 hosts; they keep
            # retrying the replica's address while it is down
            await stack.enter_async_context(
                running_agents(port=cp.port, hosts=w.hosts, state_root=tmp_path)
            )
            victim = await c.tenant.CreateInstance(
                tenant_pb2.CreateInstanceRequest(
                    instance=common_pb2.Instance(instance_type=w.instance_type, image=w.image)
                ),
                metadata=w.md,
            )
            await wait_for(
                lambda: _is(w, c, victim.name, common_pb2.INSTANCE_STATE_RUNNING), timeout=20
            )

            async def create(i: int) -> None:
                with contextlib.suppress(grpc.aio.AioRpcError):
                    await c.tenant.CreateInstance(
                        tenant_pb2.CreateInstanceRequest(
                            request_id=f"crash-{i}",
                            instance=common_pb2.Instance(
                                instance_type=w.instance_type, image=w.image
                            ),
                        ),
                        metadata=w.md,
                        timeout=5,
                    )

            tasks = [asyncio.create_task(create(i)) for i in range(5)]
            await c.tenant.TerminateInstance(
                tenant_pb2.InstanceActionRequest(name=victim.name), metadata=w.md
            )
            cp.kill()  # SIGKILL with calls in flight
            await asyncio.gather(*tasks)
            port = cp.port
            cp.close()
            # restarted where the agents expect it
            cp = ControlPlaneProcess(
                etcd,
                lease_ttl=LEASE_TTL,
                allow_fake_power=True,
                extra_args=("--listen", f"127.0.0.1:{port}"),
            ).start()
            assert cp.port == port
            c = await stack.enter_async_context(Clients(cp.port))
            w.clients = c
            await wait_for(
                lambda: _is(w, c, victim.name, common_pb2.INSTANCE_STATE_TERMINATED), timeout=20
            )

            async def settled() -> bool:
                page = await c.tenant.ListInstances(tenant_pb2.ListRequest(), metadata=w.md)
                live = [i for i in page.instances if i.name != victim.name]
                return all(i.state == common_pb2.INSTANCE_STATE_RUNNING for i in live)

            await wait_for(settled, timeout=30)
            # Retrying the interrupted creates is idempotent.
            for i in range(5):
                await c.tenant.CreateInstance(
                    tenant_pb2.CreateInstanceRequest(
                        request_id=f"crash-{i}",
                        instance=common_pb2.Instance(instance_type=w.instance_type, image=w.image),
                    ),
                    metadata=bearer(w.token),
                )
            # the victim's host is wiped by its agent and handed back
            victim_host = victim.host

            async def handed_back() -> bool:
                host: common_pb2.Host = await c.operator.GetHost(
                    tenant_pb2.GetRequest(name=victim_host), metadata=c.op_md
                )
                return host.state == common_pb2.HOST_STATE_AVAILABLE or (
                    host.state == common_pb2.HOST_STATE_ALLOCATED and host.instance != victim.name
                )

            await wait_for(handed_back, timeout=20)
        dump = await etcd_dump(etcd)
        instances = {
            f"tenants/{r['tenant']}/instances/{r['id']}": r
            for r in (json.loads(v.value) for k, v in dump.items() if b"/instances/" in k)
        }
        hosts = {
            f"hosts/{r['id']}": r
            for r in (json.loads(v.value) for k, v in dump.items() if b"/hosts/" in k)
        }
        live = {n: r for n, r in instances.items() if r["state"] != "TERMINATED"}
        assert len(live) == 5
        assert all(r["state"] != "PENDING" for r in instances.values())
        for name, rec in live.items():
            assert hosts[rec["host"]]["assigned_instance"] == name
        bound = [h for h in hosts.values() if h["assigned_instance"]]
        assert len(bound) == len(live)
        assert instances[victim.name]["host"] not in {r["host"] for r in live.values()} or (
            hosts[instances[victim.name]["host"]]["assigned_instance"] != victim.name
        )
    finally:
        cp.close()


async def _is(w: World, c: Clients, name: str, state: int) -> bool:
    return await instance_state(w, c, name) == state
