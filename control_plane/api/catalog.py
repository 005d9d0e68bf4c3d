"""Catalogue listing shared by TenantService and OperatorService.

Images and instance types are global records; both services list them with
the same paging/filter semantics; the caller check differs, and tenants get
image source URIs without user info (``uris.redacted``).
"""

from __future__ import annotations

import dataclasses

from bmaas.v1 import common_pb2, tenant_pb2
from control_plane.api import convert, filters, uris
from control_plane.domain.compute import Image, InstanceType
from control_plane.store import Store


def _tenant_view(image: Image) -> common_pb2.Image:
    return convert.image(dataclasses.replace(image, source=uris.redacted(image.source)))


async def list_images(
    store: Store, request: tenant_pb2.ListRequest, *, redact: bool = True
) -> tenant_pb2.ListImagesResponse:
    """A page of images; with *redact* (tenants) source URIs lose user info,
    in the answer and in what a filter can match."""
    view = _tenant_view if redact else convert.image
    size, token, flt = filters.page(request, common_pb2.Image, view)
    page = await store.list(Image, page_size=size, page_token=token, filter=flt)
    return tenant_pb2.ListImagesResponse(
        images=[view(i) for i in page.items], next_page_token=page.next_page_token
    )


async def list_instance_types(
    store: Store, request: tenant_pb2.ListRequest
) -> tenant_pb2.ListInstanceTypesResponse:
    size, token, flt = filters.page(request, common_pb2.InstanceType, convert.instance_type)
    page = await store.list(InstanceType, page_size=size, page_token=token, filter=flt)
    return tenant_pb2.ListInstanceTypesResponse(
        instance_types=[convert.instance_type(t) for t in page.items],
        next_page_token=page.next_page_token,
    )
