"""VXLAN VNIs and MAC addresses are unique by construction: the create
transaction claims ``vnis/{vni}`` / ``macs/{mac}`` (global), a taken value
is drawn again, and the delete transaction frees the claim.  Through the
generated TenantService client against a real etcd; the random source is
replaced where a test needs a collision."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterator

import grpc
import pytest

from bmaas.v1 import common_pb2, tenant_pb2
from control_plane.domain.network import Vpc
from control_plane.services import network
from tests.harness.etcd_dump import etcd_dump
from tools.region.control_plane import InProcessControlPlane, bearer
from tools.region.etcd import EtcdServer
from tools.region.world import World, make_tenant

ROOT = b"/bmaas/v1"
Metadata = tuple[tuple[str, str], ...]


def draws(*values: object, then: Callable[[], object] | None = None) -> Callable[[], object]:
    """A stand-in random source: *values* first, then *then* (or the last value forever)."""
    seq: Iterator[object] = iter(values)

    def draw() -> object:
        for value in seq:
            return value
        return then() if then is not None else values[-1]

    return draw


async def claims(etcd: EtcdServer, kind: bytes) -> dict[str, str]:
    """``{claimed value: holder name}`` of every ``{kind}/`` claim key."""
    prefix = ROOT + b"/" + kind + b"/"
    dump = await etcd_dump(etcd, prefix)
    return {k[len(prefix) :].decode(): e.value.decode() for k, e in dump.items()}


async def make_vpc(world: World, md: Metadata = (), **kw: str) -> common_pb2.Vpc:
    return await world.clients.tenant.CreateVpc(
        tenant_pb2.CreateVpcRequest(
            request_id=kw.get("request_id", ""), vpc=common_pb2.Vpc(cidr="10.0.0.0/16")
        ),
        metadata=md or world.md,
    )


async def make_subnet(world: World, vpc: str, md: Metadata = ()) -> common_pb2.Subnet:
    return await world.clients.tenant.CreateSubnet(
        tenant_pb2.CreateSubnetRequest(parent=vpc, subnet=common_pb2.Subnet(cidr="10.0.1.0/24")),
        metadata=md or world.md,
    )


async def make_nic(
    world: World, subnet: str, md: Metadata = (), request_id: str = ""
) -> common_pb2.NetworkInterface:
    return await world.clients.tenant.CreateNetworkInterface(
        tenant_pb2.CreateNetworkInterfaceRequest(
            request_id=request_id,
            network_interface=common_pb2.NetworkInterface(subnet=subnet),
        ),
        metadata=md or world.md,
    )


async def test_a_taken_vni_is_drawn_again_across_tenants(
    world: World, etcd: EtcdServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await make_vpc(world)
    _, other_token = await make_tenant(world.clients, "globex")
    other_md = bearer(other_token)
    monkeypatch.setattr(network, "draw_vni", draws(first.vni, 4242))
    second = await make_vpc(world, other_md)
    assert second.vni == 4242 != first.vni
    got = await world.clients.tenant.GetVpc(
        tenant_pb2.GetRequest(name=second.name), metadata=other_md
    )
    assert got.vni == 4242
    assert await claims(etcd, b"vnis") == {str(first.vni): first.name, "4242": second.name}


async def test_a_taken_mac_is_drawn_again_across_tenants(
    world: World, etcd: EtcdServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    subnet = await make_subnet(world, (await make_vpc(world)).name)
    first = await make_nic(world, subnet.name)
    _, other_token = await make_tenant(world.clients, "globex")
    other_md = bearer(other_token)
    other_subnet = await make_subnet(world, (await make_vpc(world, other_md)).name, other_md)
    monkeypatch.setattr(network, "draw_mac", draws(first.mac_address, "02:00:00:00:42:42"))
    second = await make_nic(world, other_subnet.name, other_md)
    assert second.mac_address == "02:00:00:00:42:42" != first.mac_address
    # the same address in the other tenant's own subnet: addresses are per subnet
    assert second.private_ip == first.private_ip
    assert await claims(etcd, b"macs") == {
        first.mac_address: first.name,
        "02:00:00:00:42:42": second.name,
    }


async def test_endless_collisions_abort_and_write_nothing(
    world: World, etcd: EtcdServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    vpc = await make_vpc(world)
    subnet = await make_subnet(world, vpc.name)
    nic = await make_nic(world, subnet.name)
    monkeypatch.setattr(network, "draw_vni", draws(vpc.vni))
    monkeypatch.setattr(network, "draw_mac", draws(nic.mac_address))
    before = await etcd_dump(etcd)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await make_vpc(world)
    assert exc.value.code() == grpc.StatusCode.ABORTED
    assert "VXLAN VNIs in a row were already taken" in (exc.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await make_nic(world, subnet.name)
    assert exc.value.code() == grpc.StatusCode.ABORTED
    assert "MAC addresses in a row were already taken" in (exc.value.details() or "")
    assert await etcd_dump(etcd) == before


async def test_a_replayed_request_id_keeps_its_first_draw(
    world: World, etcd: EtcdServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    vpc = await make_vpc(world, request_id="vpc-r")
    subnet = await make_subnet(world, vpc.name)
    nic = await make_nic(world, subnet.name, request_id="nic-r")
    monkeypatch.setattr(network, "draw_vni", draws(777))
    monkeypatch.setattr(network, "draw_mac", draws("02:00:00:00:07:77"))
    again = await make_vpc(world, request_id="vpc-r")
    nic_again = await make_nic(world, subnet.name, request_id="nic-r")
    assert (again.name, again.vni) == (vpc.name, vpc.vni)
    assert (nic_again.name, nic_again.mac_address) == (nic.name, nic.mac_address)
    assert await claims(etcd, b"vnis") == {str(vpc.vni): vpc.name}
    assert await claims(etcd, b"macs") == {nic.mac_address: nic.name}


async def test_concurrent_creates_never_share_a_vni_or_a_mac(
    world: World, etcd: EtcdServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """16 VPCs and 16 interfaces created at once from pools of 48 values:
    many creates draw a value another one is claiming at that moment."""
    rng = random.Random(7)
    monkeypatch.setattr(network, "draw_vni", lambda: rng.randrange(1, 49))
    macs = [f"02:00:00:00:00:{i:02x}" for i in range(48)]
    monkeypatch.setattr(network, "draw_mac", lambda: rng.choice(macs))
    vpcs = await asyncio.gather(*(make_vpc(world) for _ in range(16)))
    assert len({v.vni for v in vpcs}) == 16
    assert await claims(etcd, b"vnis") == {str(v.vni): v.name for v in vpcs}
    subnet = await make_subnet(world, vpcs[0].name)
    nics = await asyncio.gather(*(make_nic(world, subnet.name) for _ in range(16)))
    assert len({n.mac_address for n in nics}) == 16
    assert len({n.private_ip for n in nics}) == 16
    assert await claims(etcd, b"macs") == {n.mac_address: n.name for n in nics}
    listed = await world.clients.tenant.ListVpcs(tenant_pb2.ListRequest(), metadata=world.md)
    assert sorted(v.vni for v in listed.vpcs) == sorted(v.vni for v in vpcs)


async def test_delete_releases_the_claims(
    world: World, etcd: EtcdServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = world.clients
    vpc = await make_vpc(world)
    subnet = await make_subnet(world, vpc.name)
    nic = await make_nic(world, subnet.name)
    await c.tenant.DeleteNetworkInterface(
        tenant_pb2.DeleteRequest(name=nic.name), metadata=world.md
    )
    assert await claims(etcd, b"macs") == {}
    assert await claims(etcd, b"addresses") == {}
    monkeypatch.setattr(network, "draw_mac", draws(nic.mac_address))
    reused = await make_nic(world, subnet.name)
    assert reused.mac_address == nic.mac_address and reused.name != nic.name
    await c.tenant.DeleteNetworkInterface(
        tenant_pb2.DeleteRequest(name=reused.name), metadata=world.md
    )
    await c.tenant.DeleteSubnet(tenant_pb2.DeleteRequest(name=subnet.name), metadata=world.md)
    await c.tenant.DeleteVpc(tenant_pb2.DeleteRequest(name=vpc.name), metadata=world.md)
    assert await claims(etcd, b"vnis") == {}
    monkeypatch.setattr(network, "draw_vni", draws(vpc.vni))
    again = await make_vpc(world)
    assert again.vni == vpc.vni and again.name != vpc.name
    assert await claims(etcd, b"vnis") == {str(vpc.vni): again.name}


async def test_deleting_a_record_without_its_claim_leaves_the_holder_alone(
    world: World, cp: InProcessControlPlane, etcd: EtcdServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A VPC stored before VNIs were claimed has no ``vnis/`` key; a newer
    VPC may hold its VNI.  Deleting the old one must not free that claim."""
    store = cp.store
    assert store is not None
    old = await store.create(Vpc(tenant="acme", id="legacy", cidr="10.9.0.0/16", vni=909))
    await store.kv.delete(store.keys.vni(909))  # as stored before this change
    monkeypatch.setattr(network, "draw_vni", draws(909))
    newer = await make_vpc(world)
    assert newer.vni == 909
    await world.clients.tenant.DeleteVpc(
        tenant_pb2.DeleteRequest(name=old.name, etag=old.etag), metadata=world.md
    )
    assert await claims(etcd, b"vnis") == {"909": newer.name}
    monkeypatch.setattr(network, "draw_vni", draws(909, 910))
    third = await make_vpc(world)
    assert third.vni == 910


def test_draws_stay_in_range() -> None:
    for _ in range(200):
        vni, mac = network.draw_vni(), network.draw_mac()
        assert 1 <= vni <= 2**24 - 2
        assert mac.startswith("02:") and len(mac) == 17
