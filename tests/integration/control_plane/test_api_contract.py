"""The API's contract with any client, for EVERY RPC of the three services.

The RPCs are enumerated from the generated descriptors (a new RPC is covered
the day it is added), and their requests are filled generically from the
descriptors: 32 KiB in every string and bytes field, the empty request,
malformed values (control characters, path tricks, extreme integers, unknown
enum numbers), each field oversized alone on top of real resource names
(the 32 KiB etag of a real volume that once broke clients' connections),
and no/foreign credentials.  Each call must fail with a client error code
(never UNKNOWN/INTERNAL), its whole status (message + details) must stay
small, the channel must still serve the next call, and a full dump of etcd
must be unchanged.  ``AgentService.Connect`` gets the same treatment per
``AgentMessage`` body.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from bmaas.v1 import (
    agent_pb2,
    common_pb2,
    operator_pb2,
    tenant_pb2,
)
from control_plane.api import errors
from tests.harness.etcd_dump import etcd_dump
from tools.region.control_plane import Clients, InProcessControlPlane, bearer
from tools.region.etcd import EtcdServer
from tools.region.world import World, build_world, make_tenant

HUGE = "x" * 32 * 1024
MALFORMED = "../a b/\x01\x7f%s\u202eé" + "/" * 40
#: the whole error a client receives: message + serialized details
MAX_ERROR_BYTES = 4096
CLIENT_ERRORS = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.OUT_OF_RANGE,
}
SERVICES = {
    "TenantService": tenant_pb2.DESCRIPTOR.services_by_name["TenantService"],
    "OperatorService": operator_pb2.DESCRIPTOR.services_by_name["OperatorService"],
    "AgentService": agent_pb2.DESCRIPTOR.services_by_name["AgentService"],
}
_INT_MAX = {
    FieldDescriptor.TYPE_INT32: -(2**31),
    FieldDescriptor.TYPE_INT64: -(2**63),
    FieldDescriptor.TYPE_UINT32: 2**32 - 1,
    FieldDescriptor.TYPE_UINT64: 2**64 - 1,
}


def _message_class(descriptor: Any) -> type[Message]:
    for module in (tenant_pb2, operator_pb2, agent_pb2, common_pb2):
        cls = getattr(module, descriptor.name, None)
        if cls is not None and cls.DESCRIPTOR.full_name == descriptor.full_name:
            return cls  # type: ignore[no-any-return]
    raise LookupError(descriptor.full_name)


def fill(msg: Message, text: str, *, depth: int = 0) -> Message:
    """Every string/bytes field of *msg* (recursively) set to *text*; in the
    malformed flavour integers go to their extremes and enums to 99."""
    malformed = text == MALFORMED
    for fd in msg.DESCRIPTOR.fields:
        repeated = fd.is_repeated
        if fd.type == FieldDescriptor.TYPE_MESSAGE:
            if fd.message_type.full_name.startswith("google.protobuf.") or depth > 3:
                continue
            sub = getattr(msg, fd.name).add() if repeated else getattr(msg, fd.name)
            fill(sub, text, depth=depth + 1)
            if not repeated:
                sub.SetInParent()
            continue
        if fd.type == FieldDescriptor.TYPE_STRING:
            value: Any = text
        elif fd.type == FieldDescriptor.TYPE_BYTES:
            value = text.encode()
        elif not malformed:
            continue
        elif fd.type == FieldDescriptor.TYPE_ENUM:
            value = 99
        elif fd.type == FieldDescriptor.TYPE_BOOL:
            value = True
        else:
            value = _INT_MAX.get(fd.type, 0)
        if repeated:
            getattr(msg, fd.name).append(value)
        else:
            setattr(msg, fd.name, value)
    return msg


def string_paths(descriptor: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for fd in descriptor.fields:
        path = (*prefix, fd.name)
        if fd.type == FieldDescriptor.TYPE_MESSAGE:
            if fd.message_type.full_name.startswith("google.protobuf.") or len(path) > 3:
                continue
            yield from string_paths(fd.message_type, path)
        elif fd.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
            yield path


def set_path(msg: Message, path: tuple[str, ...], value: str) -> None:
    for part in path[:-1]:
        fd = msg.DESCRIPTOR.fields_by_name[part]
        if fd.is_repeated:
            container = getattr(msg, part)
            msg = container[0] if len(container) else container.add()
        else:
            msg = getattr(msg, part)
            msg.SetInParent()
    fd = msg.DESCRIPTOR.fields_by_name[path[-1]]
    raw: Any = value.encode() if fd.type == FieldDescriptor.TYPE_BYTES else value
    if fd.is_repeated:
        getattr(msg, path[-1]).append(raw)
    else:
        setattr(msg, path[-1], raw)


# -- the world the cases point at ------------------------------------------------------


@dataclass
class Env:
    world: World
    host_cred: str
    names: dict[str, str]  # noun -> an existing resource's name


@pytest.fixture(scope="module")
def etcd_contract() -> Iterator[EtcdServer]:
    with EtcdServer(name="bmaas-contract") as server:
        yield server


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def env(etcd_contract: EtcdServer) -> AsyncIterator[Env]:
    async with (
        InProcessControlPlane(etcd_contract, allow_fake_power=True) as plane,
        Clients(plane.port) as c,
    ):
        w = await build_world(c, hosts=2)
        await make_tenant(c, "other")
        vol = await c.tenant.CreateVolume(
            tenant_pb2.CreateVolumeRequest(volume=common_pb2.Volume(size_gib=10)), metadata=w.md
        )
        inst = await c.tenant.CreateInstance(
            tenant_pb2.CreateInstanceRequest(
                instance=common_pb2.Instance(instance_type=w.instance_type, image=w.image)
            ),
            metadata=w.md,
        )
        vpc = await c.tenant.CreateVpc(
            tenant_pb2.CreateVpcRequest(vpc=common_pb2.Vpc(cidr="10.1.0.0/16")), metadata=w.md
        )
        subnet = await c.tenant.CreateSubnet(
            tenant_pb2.CreateSubnetRequest(
                parent=vpc.name, subnet=common_pb2.Subnet(cidr="10.1.1.0/24", zone="z1")
            ),
            metadata=w.md,
        )
        nic = await c.tenant.CreateNetworkInterface(
            tenant_pb2.CreateNetworkInterfaceRequest(
                network_interface=common_pb2.NetworkInterface(subnet=subnet.name)
            ),
            metadata=w.md,
        )
        group = await c.tenant.CreatePlacementGroup(
            tenant_pb2.CreatePlacementGroupRequest(placement_group=common_pb2.PlacementGroup()),
            metadata=w.md,
        )
        names = {
            "Instance": inst.name,
            "Console": inst.name,
            "Volume": vol.name,
            "Vpc": vpc.name,
            "Subnet": subnet.name,
            "NetworkInterface": nic.name,
            "PlacementGroup": group.name,
            "Host": "hosts/h0",
            "Tenant": w.tenant,
            "Register": "hosts/h0",
        }
        yield Env(w, w.hosts["hosts/h0"], names)


# -- the cases --------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    service: str
    method: str
    variant: str
    build: Callable[[Env], Message]
    who: str = "own"  # own: the service's credential; none; foreign

    @property
    def id(self) -> str:
        return f"{self.service}.{self.method}:{self.variant}:{self.who}"


def _base(env: Env, method: Any) -> Message:
    """The request with its name-like fields pointing at real resources."""
    msg = _message_class(method.input_type)()
    noun = max((n for n in env.names if n in method.name), key=len, default="")
    real = {
        "name": env.names.get(noun, ""),
        "tenant": env.world.tenant,
        "instance": env.names["Instance"],
        "host": "hosts/h0",
        "parent": env.names["Vpc"],
    }
    for fd in msg.DESCRIPTOR.fields:
        if fd.type == FieldDescriptor.TYPE_STRING and real.get(fd.name):
            setattr(msg, fd.name, real[fd.name])
    return msg


def _with(env: Env, method: Any, path: tuple[str, ...], value: str) -> Message:
    msg = _base(env, method)
    set_path(msg, path, value)
    return msg


def _cases() -> list[Case]:
    out: list[Case] = []
    for sname, service in SERVICES.items():
        for method in service.methods:
            if method.client_streaming:
                continue  # AgentService.Connect: test_connect_stream below
            cls = _message_class(method.input_type)
            m = method

            def build(env: Env, kind: str, cls: type[Message] = cls, m: Any = m) -> Message:
                if kind == "empty":
                    return cls()
                return fill(cls(), HUGE if kind == "oversized" else MALFORMED)

            for kind in ("empty", "oversized", "malformed"):
                out.append(Case(sname, method.name, kind, lambda e, k=kind, b=build: b(e, k)))
            for path in string_paths(method.input_type):
                label = ".".join(path)
                out.append(
                    Case(
                        sname,
                        method.name,
                        f"huge-{label}",
                        lambda e, p=path, m=m: _with(e, m, p, HUGE),
                    )
                )
            out.append(Case(sname, method.name, "base", lambda e, m=m: _base(e, m), "none"))
            out.append(Case(sname, method.name, "base", lambda e, m=m: _base(e, m), "foreign"))
    return out


CASES = _cases()


def test_every_rpc_is_covered() -> None:
    covered = {(c.service, c.method) for c in CASES}
    for sname, service in SERVICES.items():
        for method in service.methods:
            assert method.client_streaming or (sname, method.name) in covered


def _metadata(env: Env, service: str, who: str) -> tuple[tuple[str, str], ...]:
    c = env.world.clients
    own = {
        "TenantService": env.world.md,
        "OperatorService": c.op_md,
        "AgentService": bearer(env.host_cred),
    }
    if who == "own":
        return own[service]
    if who == "none":
        return ()
    # foreign: a valid credential of another service
    return own["OperatorService" if service != "OperatorService" else "TenantService"]


def _stub(env: Env, service: str) -> Any:
    c = env.world.clients
    return {"TenantService": c.tenant, "OperatorService": c.operator, "AgentService": c.agent}[
        service
    ]


def error_bytes(err: grpc.aio.AioRpcError) -> int:
    size = len((err.details() or "").encode())
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            size += len(value)
    return size


def check_error(err: grpc.aio.AioRpcError, what: str) -> None:
    assert err.code() in CLIENT_ERRORS, f"{what}: {err.code()} {err.details()!r:.300}"
    assert error_bytes(err) < MAX_ERROR_BYTES, f"{what}: error of {error_bytes(err)} bytes"
    assert HUGE[:1000] not in (err.details() or ""), f"{what}: echoes the input"
    if err.code() == grpc.StatusCode.NOT_FOUND:
        status = rpc_status.from_call(err)
        assert status is not None, what
        infos = [error_details_pb2.ResourceInfo() for _ in status.details]
        found = [i for i, d in zip(infos, status.details, strict=True) if d.Unpack(i)]
        assert found and found[0].resource_type.startswith("bmaas.v1."), f"{what}: {found}"
        assert found[0].resource_name, what


async def _channel_works(env: Env) -> None:
    c = env.world.clients
    resp = await c.operator.ListTenants(
        tenant_pb2.ListRequest(page_size=1), metadata=c.op_md, timeout=30
    )
    assert len(resp.tenants) == 1


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_bad_request_is_refused_small_and_harmless(
    env: Env, etcd_contract: EtcdServer, case: Case
) -> None:
    request = case.build(env)
    md = _metadata(env, case.service, case.who)
    before = await etcd_dump(etcd_contract)
    try:
        await getattr(_stub(env, case.service), case.method)(request, metadata=md, timeout=30)
    except grpc.aio.AioRpcError as exc:
        check_error(exc, case.id)
    else:
        # an empty List request is a valid read; nothing else may succeed
        assert case.variant == "empty" and case.method.startswith("List"), f"{case.id}: OK"
    assert await etcd_dump(etcd_contract) == before, f"{case.id}: etcd changed"
    await _channel_works(env)


CONNECT_BODIES = [fd.name for fd in agent_pb2.AgentMessage.DESCRIPTOR.oneofs_by_name["body"].fields]


@pytest.mark.parametrize(
    ("body", "kind"),
    [(b, k) for b in CONNECT_BODIES for k in ("oversized", "malformed")] + [("", "empty")],
)
async def test_connect_stream(env: Env, etcd_contract: EtcdServer, body: str, kind: str) -> None:
    msg = agent_pb2.AgentMessage()
    if body:
        sub = getattr(msg, body)
        fill(sub, HUGE if kind == "oversized" else MALFORMED)
        sub.SetInParent()
    before = await etcd_dump(etcd_contract)
    call = env.world.clients.agent.Connect(metadata=bearer(env.host_cred), timeout=30)
    await call.write(msg)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        async for _ in call:
            pass
    check_error(exc.value, f"Connect {body} {kind}")
    assert await etcd_dump(etcd_contract) == before, f"Connect {body} {kind}: etcd changed"
    await _channel_works(env)


async def test_a_32k_etag_of_a_real_volume_gets_a_short_answer(env: Env) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await env.world.clients.tenant.DeleteVolume(
            tenant_pb2.DeleteRequest(name=env.names["Volume"], etag="9" * 32 * 1024),
            metadata=env.world.md,
            timeout=30,
        )
    err = exc.value
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "…" in (err.details() or "") and "32768 characters" in (err.details() or "")
    assert len((err.details() or "").encode()) <= errors.MESSAGE_BYTES
    await asyncio.sleep(0)
    await _channel_works(env)
