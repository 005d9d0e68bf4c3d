"""Image source URIs through the API: tenants never see the user info an
operator put in a URI, and a scheme no agent can fetch is refused at
RegisterImage (INVALID_ARGUMENT, nothing stored)."""

from __future__ import annotations

import grpc
import pytest

from bmaas.v1 import common_pb2, operator_pb2, tenant_pb2
from tools.region.control_plane import Clients
from tools.region.world import World

SECRET_URI = "https://mirror-user:hunter2@mirror.example:8443/debian-12.raw?x=1"


async def register(c: Clients, name: str, uri: str) -> common_pb2.Image:
    return await c.operator.RegisterImage(
        operator_pb2.RegisterImageRequest(
            image=common_pb2.Image(name=f"images/{name}", os="debian-12", source_uri=uri)
        ),
        metadata=c.op_md,
    )


async def test_tenants_see_no_credentials_in_image_uris(world: World) -> None:
    c = world.clients
    img = await register(c, "private-mirror", SECRET_URI)
    assert img.source_uri == SECRET_URI  # the operator registered it
    ops = await c.operator.ListImages(tenant_pb2.ListRequest(), metadata=c.op_md)
    assert SECRET_URI in [i.source_uri for i in ops.images]
    mine = await c.tenant.ListImages(tenant_pb2.ListRequest(), metadata=world.md)
    shown = {i.name: i.source_uri for i in mine.images}
    assert shown["images/private-mirror"] == "https://mirror.example:8443/debian-12.raw?x=1"
    assert shown[world.image] == "file:///images/d12.raw"  # no user info: unchanged
    assert b"hunter2" not in mine.SerializeToString()
    assert b"mirror-user" not in mine.SerializeToString()
    # nor can a tenant probe for it with a filter
    probe = await c.tenant.ListImages(
        tenant_pb2.ListRequest(filter=f'source_uri="{SECRET_URI}"'), metadata=world.md
    )
    assert list(probe.images) == []


@pytest.mark.parametrize(
    "uri", ["s3://bucket/debian-12.raw", "ftp://mirror.example/x.raw", "images/relative.raw"]
)
async def test_an_unfetchable_source_is_refused_and_nothing_stored(
    clients: Clients, uri: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await register(clients, "unfetchable", uri)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = exc.value.details() or ""
    assert details.startswith("image.source_uri") and "no agent can fetch" in details
    assert "\n" not in details
    images = await clients.operator.ListImages(tenant_pb2.ListRequest(), metadata=clients.op_md)
    assert "images/unfetchable" not in [i.name for i in images.images]
