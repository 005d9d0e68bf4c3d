"""Resource names in Google AIP-122 style.

A name alternates collection and id segments::

    tenants/{tenant}
    tenants/{tenant}/instances/{instance}
    tenants/{tenant}/volumes/{volume}
    tenants/{tenant}/vpcs/{vpc}
    tenants/{tenant}/vpcs/{vpc}/subnets/{subnet}
    tenants/{tenant}/networkInterfaces/{nic}
    tenants/{tenant}/placementGroups/{group}
    hosts/{host}
    instanceTypes/{type}
    images/{image}

``ResourceName`` parses a name into ``collection`` (the last collection
segment) and ``ids`` (every id segment, outermost first); the store derives
its etcd key from exactly these two parts.
"""

from __future__ import annotations

from dataclasses import dataclass

from control_plane.domain.errors import InvalidArgument
from control_plane.domain.validation import validate_id

#: collection -> the collections of its ancestors, outermost first.
COLLECTIONS: dict[str, tuple[str, ...]] = {
    "tenants": (),
    "instances": ("tenants",),
    "volumes": ("tenants",),
    "vpcs": ("tenants",),
    "subnets": ("tenants", "vpcs"),
    "networkInterfaces": ("tenants",),
    "placementGroups": ("tenants",),
    "hosts": (),
    "instanceTypes": (),
    "images": (),
}


@dataclass(frozen=True, slots=True)
class ResourceName:
    collection: str
    ids: tuple[str, ...]

    def __str__(self) -> str:
        parts: list[str] = []
        for coll, id_ in zip(
            (*COLLECTIONS[self.collection], self.collection), self.ids, strict=True
        ):
            parts += [coll, id_]
        return "/".join(parts)

    @property
    def tenant(self) -> str | None:
        """The owning tenant's id for tenant-scoped resources."""
        ancestors = COLLECTIONS[self.collection]
        if self.collection == "tenants":
            return self.ids[0]
        if ancestors and ancestors[0] == "tenants":
            return self.ids[0]
        return None

    @property
    def id(self) -> str:
        return self.ids[-1]


def parse_name(name: str, *, collection: str | None = None) -> ResourceName:
    """Parse and validate an AIP name; ``InvalidArgument`` if malformed or of
    another collection than *collection*."""
    segments = name.split("/")
    if len(segments) % 2 or not segments[0]:
        raise InvalidArgument(f"malformed resource name {name!r}")
    colls = tuple(segments[0::2])
    ids = tuple(segments[1::2])
    kind = colls[-1]
    if kind not in COLLECTIONS or COLLECTIONS[kind] != colls[:-1]:
        raise InvalidArgument(f"unknown resource collection in {name!r}")
    if collection is not None and kind != collection:
        raise InvalidArgument(f"expected a {collection} name, got {name!r}")
    for id_ in ids:
        validate_id(id_, what=f"id in {name!r}")
    return ResourceName(kind, ids)


def make_name(collection: str, *ids: str) -> str:
    return str(ResourceName(collection, tuple(ids)))


def tenant_name(tenant: str) -> str:
    return f"tenants/{tenant}"


def host_name(host: str) -> str:
    return f"hosts/{host}"


def instance_name(tenant: str, instance: str) -> str:
    return f"tenants/{tenant}/instances/{instance}"


def volume_name(tenant: str, volume: str) -> str:
    return f"tenants/{tenant}/volumes/{volume}"
