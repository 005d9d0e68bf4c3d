"""50 concurrent CreateInstance calls against 20 matching hosts through TWO
control-plane replicas (separate processes sharing one etcd): exactly 20
succeed, 30 fail RESOURCE_EXHAUSTED, and no host is given out twice - checked
both in the responses and in etcd."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import grpc

from bmaas.v1 import common_pb2, operator_pb2, tenant_pb2
from tests.harness.etcd_dump import etcd_dump
from tools.region.control_plane import Clients, ControlPlaneProcess
from tools.region.etcd import EtcdServer
from tools.region.world import enroll, make_tenant

MATCHING, DECOYS, REQUESTS = 20, 5, 50


async def test_fifty_creates_twenty_hosts_two_replicas(etcd: EtcdServer) -> None:
    with (
        ControlPlaneProcess(etcd, allow_fake_power=True) as a,
        ControlPlaneProcess(etcd, allow_fake_power=True) as b,
    ):
        async with Clients(a.port) as ca, Clients(b.port) as cb:
            _, token = await make_tenant(ca, "acme", max_instances=1000)
            await ca.operator.CreateInstanceType(
                operator_pb2.CreateInstanceTypeRequest(
                    instance_type=common_pb2.InstanceType(
                        name="instanceTypes/bm-big", host_class="big", cpus=64, memory_gib=512
                    )
                ),
                metadata=ca.op_md,
            )
            await ca.operator.RegisterImage(
                operator_pb2.RegisterImageRequest(
                    image=common_pb2.Image(name="images/d12", source_uri="file:///d12")
                ),
                metadata=ca.op_md,
            )
            await asyncio.gather(
                *(
                    enroll(
                        ca if i % 2 else cb, host_id=f"big{i}", host_class="big", rack=f"r{i % 4}"
                    )
                    for i in range(MATCHING)
                ),
                *(enroll(ca, host_id=f"small{i}", host_class="small") for i in range(DECOYS)),
            )
            # no pause for the host caches' watches: a replica answers "no
            # capacity" only after its cache caught up with etcd (catch_up)
            md = (("authorization", f"Bearer {token}"),)

            async def create(i: int) -> common_pb2.Instance | grpc.StatusCode:
                stub = (ca if i % 2 else cb).tenant
                req = tenant_pb2.CreateInstanceRequest(
                    request_id=f"req-{i}",
                    instance=common_pb2.Instance(
                        instance_type="instanceTypes/bm-big", image="images/d12"
                    ),
                )
                try:
                    return await stub.CreateInstance(req, metadata=md, timeout=30)
                except grpc.aio.AioRpcError as err:
                    return err.code()

            results = await asyncio.gather(*(create(i) for i in range(REQUESTS)))

    ok = [r for r in results if isinstance(r, common_pb2.Instance)]
    codes = Counter(r for r in results if isinstance(r, grpc.StatusCode))
    assert len(ok) == MATCHING, codes
    assert codes == {grpc.StatusCode.RESOURCE_EXHAUSTED: REQUESTS - MATCHING}
    hosts = [i.host for i in ok]
    assert len(set(hosts)) == MATCHING and all(h.startswith("hosts/big") for h in hosts)

    dump = await etcd_dump(etcd)
    instances = {k: json.loads(v.value) for k, v in dump.items() if b"/instances/" in k}
    assert len(instances) == MATCHING  # refused creates left nothing behind
    bound = Counter(rec["host"] for rec in instances.values())
    assert all(n == 1 for n in bound.values()) and len(bound) == MATCHING
    host_recs = {k: json.loads(v.value) for k, v in dump.items() if b"/hosts/" in k}
    allocated = {
        f"hosts/{rec['id']}": rec["assigned_instance"]
        for rec in host_recs.values()
        if rec["assigned_instance"]
    }
    assert len(allocated) == MATCHING
    for rec in instances.values():
        name = f"tenants/{rec['tenant']}/instances/{rec['id']}"
        assert allocated[rec["host"]] == name
    # usage = charged - released (refused creates were charged, then released)
    charged = json.loads(dump[b"/bmaas/v1/usage/acme"].value)
    released_kv = dump.get(b"/bmaas/v1/released/acme")
    released = json.loads(released_kv.value) if released_kv is not None else {}
    assert charged["instances"] - released.get("instances", 0) == MATCHING
