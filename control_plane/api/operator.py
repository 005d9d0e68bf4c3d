"""``OperatorService``: hosts, catalogue and tenants, for the operator token.

Operator creates (hosts, instance types, images, tenants) are idempotent on
``request_id`` by naming: without an explicit name the id is derived from the
request id (``derived_id``), so a retry hits the same key; an existing record
with the same spec is returned as if just created, a different spec is
ALREADY_EXISTS.  ``IssueTenantToken`` names the token after the tenant and
request id (``auth.derived_token_id``): a retry finds the token the first
call stored and returns its id and metadata with ``replayed`` set and no
secret (only the secret's SHA-256 is stored, and it is shown once).
``EnrollHost`` stores only the SHA-256 of the new agent
secret; a retried enrolment cannot show the lost secret again, so it rotates
the credential (CAS on the host's etag) and returns the new one.  The
``fake`` power driver (a simulated server) is FAILED_PRECONDITION unless the
replica runs with ``--allow-fake-power`` (scale tests, benchmarks): a
production region never reports servers that do not exist.

Host actions are read-modify-CAS updates through ``Store.mutate`` with the
lifecycle table doing the state checks: maintenance ON moves an idle host to
MAINTENANCE at once (a bound host goes once its instance is gone: the
controllers see ``maintenance=True``), OFF sends it through CLEANING;
decommission is allowed from ENROLLED or MAINTENANCE only.  Drain cordons the
host and terminates its instance.

Tenant tokens (issue, list, revoke) are in ``operator_tokens``.
``RegisterImage`` refuses a source the agents cannot fetch (``uris``);
``ListImages`` shows operators the source URI as stored, user info included
(tenants get it without).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TypeVar

from bmaas.v1 import common_pb2, operator_pb2, operator_pb2_grpc, tenant_pb2
from control_plane.api import auth, catalog, convert, filters, uris, validate
from control_plane.api.base import Servicer
from control_plane.api.errors import InvalidField
from control_plane.api.operator_tokens import TokensMixin
from control_plane.api.rpc import Context, unary
from control_plane.domain.compute import Image, InstanceType
from control_plane.domain.errors import AlreadyExists, FailedPrecondition, InvalidTransition
from control_plane.domain.host import Host
from control_plane.domain.lifecycle import HostEvent, HostState
from control_plane.domain.tenant import Quota, Tenant
from control_plane.domain.transitions import apply_host_event
from control_plane.domain.validation import MAX_VOLUME_GIB

SERVICE = "OperatorService"
G = TypeVar("G", InstanceType, Image, Tenant)
POWER_DRIVERS = ("fake", "qemu")


def _same(a: object, b: object, *ignore: str) -> bool:
    """Records equal apart from bookkeeping fields (a retried create)."""
    skip = {"etag", "create_time", "update_time", "request_id", *ignore}
    fields = [f.name for f in dataclasses.fields(a)]  # type: ignore[arg-type]
    return all(getattr(a, f) == getattr(b, f) for f in fields if f not in skip)


class OperatorServicer(TokensMixin, Servicer, operator_pb2_grpc.OperatorServiceServicer):
    # -- hosts --------------------------------------------------------------------------

    @unary(SERVICE)
    async def EnrollHost(
        self, request: operator_pb2.EnrollHostRequest, context: Context
    ) -> operator_pb2.EnrollHostResponse:
        self.operator(context)
        rid = validate.request_id(request.request_id)
        if not request.HasField("host"):
            raise InvalidField("host", "is required")
        spec = request.host
        if spec.name:
            host_id = validate.name(spec.name, "host.name", "hosts").id
        else:
            host_id = validate.derived_id("h", rid) if rid else validate.new_id("h")
        if not spec.HasField("hardware"):
            raise InvalidField("host.hardware", "is required")
        hardware = validate.hardware(spec.hardware, "host.hardware")
        zone = validate.ident(spec.zone, "host.zone")
        rack = validate.ident(spec.rack, "host.rack")
        host_class = validate.ident(spec.host_class, "host.host_class")
        driver = spec.power_driver
        if driver not in POWER_DRIVERS:
            what = "is required" if not driver else "is not known"
            raise InvalidField("host.power_driver", f"{what}: one of {', '.join(POWER_DRIVERS)}")
        if driver == "fake" and not self.deps.allow_fake_power:
            raise FailedPrecondition(
                "host.power_driver 'fake' simulates a server: this control plane does not "
                "run with --allow-fake-power"
            )
        secret = auth.new_secret()
        host = Host(
            id=host_id,
            zone=zone,
            rack=rack,
            host_class=host_class,
            hardware=hardware,
            power_driver=driver,
            state=HostState.ENROLLED,
            agent_credential_hash=auth.digest(secret),
        )
        try:
            created = await self.store.create(host)
        except AlreadyExists:
            existing = await self.store.get(Host, host.name)
            if not rid or not _same(existing, host, "agent_credential_hash", *_HOST_STATUS):
                raise
            if existing.state is not HostState.ENROLLED:
                # An agent registered with the first credential: it was not
                # lost, and rotating it would cut that agent off.
                return operator_pb2.EnrollHostResponse(host=convert.host(existing))
            digest = auth.digest(secret)
            created = await self.store.mutate(
                Host,
                host.name,
                lambda h: dataclasses.replace(h, agent_credential_hash=digest),
                etag=existing.etag,
            )
        return operator_pb2.EnrollHostResponse(
            host=convert.host(created), agent_credential=auth.agent_credential(host_id, secret)
        )

    @unary(SERVICE)
    async def GetHost(self, request: tenant_pb2.GetRequest, context: Context) -> common_pb2.Host:
        self.operator(context)
        name = str(validate.name(request.name, "name", "hosts"))
        return convert.host(await self.store.get(Host, name))

    @unary(SERVICE)
    async def ListHosts(
        self, request: tenant_pb2.ListRequest, context: Context
    ) -> operator_pb2.ListHostsResponse:
        self.operator(context)
        size, token, flt = filters.page(request, common_pb2.Host, convert.host)
        page = await self.store.list(Host, page_size=size, page_token=token, filter=flt)
        return operator_pb2.ListHostsResponse(
            hosts=[convert.host(h) for h in page.items], next_page_token=page.next_page_token
        )

    async def _mutate_host(
        self, request_name: str, etag: str, change: Callable[[Host], Host]
    ) -> Host:
        name = str(validate.name(request_name, "name", "hosts"))
        return await self.store.mutate(Host, name, change, etag=validate.etag(etag))

    async def _set_cordoned(
        self, request: operator_pb2.HostActionRequest, context: Context, cordoned: bool
    ) -> Host:
        self.operator(context)
        validate.text(request.reason, "reason")
        return await self._mutate_host(
            request.name, request.etag, lambda h: dataclasses.replace(h, cordoned=cordoned)
        )

    @unary(SERVICE)
    async def CordonHost(
        self, request: operator_pb2.HostActionRequest, context: Context
    ) -> common_pb2.Host:
        return convert.host(await self._set_cordoned(request, context, True))

    @unary(SERVICE)
    async def UncordonHost(
        self, request: operator_pb2.HostActionRequest, context: Context
    ) -> common_pb2.Host:
        return convert.host(await self._set_cordoned(request, context, False))

    @unary(SERVICE)
    async def DrainHost(
        self, request: operator_pb2.HostActionRequest, context: Context
    ) -> common_pb2.Host:
        self.operator(context)
        validate.text(request.reason, "reason")
        name = str(validate.name(request.name, "name", "hosts"))
        host = await self.services.hosts.drain(name, etag=validate.etag(request.etag))
        return convert.host(host)

    @unary(SERVICE)
    async def SetHostMaintenance(
        self, request: operator_pb2.SetHostMaintenanceRequest, context: Context
    ) -> common_pb2.Host:
        self.operator(context)
        reason = validate.text(request.reason, "reason")
        now = self.store.clock()

        def change(h: Host) -> Host:
            if request.maintenance:
                h = dataclasses.replace(h, maintenance=True, maintenance_reason=reason)
                if h.state == HostState.MAINTENANCE or h.assigned_instance:
                    return h
                try:
                    return apply_host_event(h, HostEvent.MAINTAIN, now=now)
                except InvalidTransition:
                    return h  # e.g. ALLOCATED: the controllers finish it later
            h = dataclasses.replace(h, maintenance=False, maintenance_reason="")
            if h.state == HostState.MAINTENANCE:
                return apply_host_event(h, HostEvent.UNMAINTAIN, now=now)
            return h

        return convert.host(await self._mutate_host(request.name, request.etag, change))

    @unary(SERVICE)
    async def DecommissionHost(
        self, request: operator_pb2.HostActionRequest, context: Context
    ) -> common_pb2.Host:
        self.operator(context)
        validate.text(request.reason, "reason")
        now = self.store.clock()

        def change(h: Host) -> Host:
            if h.state == HostState.DECOMMISSIONED:
                return h
            if h.state not in (HostState.ENROLLED, HostState.MAINTENANCE):
                raise FailedPrecondition(
                    f"{h.name} is {h.state}: put it in maintenance before decommissioning"
                )
            return dataclasses.replace(
                apply_host_event(h, HostEvent.DECOMMISSION, now=now), agent_credential_hash=""
            )

        return convert.host(await self._mutate_host(request.name, request.etag, change))

    # -- catalogue ----------------------------------------------------------------------

    @unary(SERVICE)
    async def CreateInstanceType(
        self, request: operator_pb2.CreateInstanceTypeRequest, context: Context
    ) -> common_pb2.InstanceType:
        self.operator(context)
        rid = validate.request_id(request.request_id)
        spec = request.instance_type
        type_id = validate.name(spec.name, "instance_type.name", "instanceTypes").id
        itype = InstanceType(
            id=type_id,
            host_class=validate.ident(spec.host_class, "instance_type.host_class"),
            cpus=validate.int_range(spec.cpus, "instance_type.cpus", 1, validate.MAX_CPUS),
            memory_gib=validate.int_range(
                spec.memory_gib, "instance_type.memory_gib", 1, validate.MAX_MEMORY_GIB
            ),
            description=validate.text(spec.description, "instance_type.description"),
        )
        return convert.instance_type(await self._create_global(itype, rid))

    async def _create_global(self, obj: G, rid: str) -> G:
        try:
            return await self.store.create(obj)
        except AlreadyExists:
            existing = await self.store.get(type(obj), obj.name)
            if rid and _same(existing, obj):
                return existing
            raise

    @unary(SERVICE)
    async def ListInstanceTypes(
        self, request: tenant_pb2.ListRequest, context: Context
    ) -> tenant_pb2.ListInstanceTypesResponse:
        self.operator(context)
        return await catalog.list_instance_types(self.store, request)

    @unary(SERVICE)
    async def RegisterImage(
        self, request: operator_pb2.RegisterImageRequest, context: Context
    ) -> common_pb2.Image:
        self.operator(context)
        rid = validate.request_id(request.request_id)
        spec = request.image
        image_id = validate.name(spec.name, "image.name", "images").id
        source = validate.text(
            spec.source_uri, "image.source_uri", max_len=validate.MAX_URI_LEN, required_=True
        )
        uris.check_fetchable(source, "image.source_uri")
        checksum = validate.text(spec.checksum, "image.checksum", max_len=80)
        if checksum and not (
            checksum.startswith("sha256:")
            and len(checksum) == 71
            and all(c in "0123456789abcdef" for c in checksum[7:])
        ):
            raise InvalidField("image.checksum", "must be 'sha256:' and 64 lowercase hex digits")
        image = Image(
            id=image_id,
            display_name=validate.text(spec.display_name, "image.display_name", max_len=256),
            os=validate.text(spec.os or "linux", "image.os", max_len=64),
            source=source,
            size_gib=validate.int_range(spec.size_gib or 10, "image.size_gib", 1, MAX_VOLUME_GIB),
            checksum=checksum,
        )
        return convert.image(await self._create_global(image, rid))

    @unary(SERVICE)
    async def ListImages(
        self, request: tenant_pb2.ListRequest, context: Context
    ) -> tenant_pb2.ListImagesResponse:
        self.operator(context)
        return await catalog.list_images(self.store, request, redact=False)

    # -- tenants ------------------------------------------------------------------------

    @unary(SERVICE)
    async def CreateTenant(
        self, request: operator_pb2.CreateTenantRequest, context: Context
    ) -> common_pb2.Tenant:
        self.operator(context)
        rid = validate.request_id(request.request_id)
        if not request.HasField("tenant"):
            raise InvalidField("tenant", "is required (an empty Tenant picks an id and defaults)")
        spec = request.tenant
        validate.etag(spec.etag, "tenant.etag")  # output only: ignored, but bounded
        if spec.name:
            tenant_id = validate.name(spec.name, "tenant.name", "tenants").id
        else:
            tenant_id = validate.derived_id("t", rid) if rid else validate.new_id("t")
        quota = _quota(spec.quota, "tenant.quota") if spec.HasField("quota") else Quota()
        tenant = Tenant(
            id=tenant_id,
            display_name=validate.text(spec.display_name, "tenant.display_name", max_len=256),
            quota=quota,
        )
        return convert.tenant(await self._create_global(tenant, rid))

    @unary(SERVICE)
    async def GetTenant(
        self, request: tenant_pb2.GetRequest, context: Context
    ) -> common_pb2.Tenant:
        self.operator(context)
        rn = validate.name(request.name, "name", "tenants")
        tenant = await self.store.get(Tenant, str(rn))
        return convert.tenant(tenant, await self.store.get_usage(rn.id))

    @unary(SERVICE)
    async def ListTenants(
        self, request: tenant_pb2.ListRequest, context: Context
    ) -> operator_pb2.ListTenantsResponse:
        self.operator(context)
        size, token, flt = filters.page(request, common_pb2.Tenant, convert.tenant)
        page = await self.store.list(Tenant, page_size=size, page_token=token, filter=flt)
        return operator_pb2.ListTenantsResponse(
            tenants=[convert.tenant(t) for t in page.items], next_page_token=page.next_page_token
        )

    @unary(SERVICE)
    async def SetTenantQuota(
        self, request: operator_pb2.SetTenantQuotaRequest, context: Context
    ) -> common_pb2.Tenant:
        self.operator(context)
        rn = validate.name(request.tenant, "tenant", "tenants")
        if not request.HasField("quota"):
            raise InvalidField("quota", "is required")
        quota = _quota(request.quota, "quota")
        tenant = await self.store.mutate(
            Tenant,
            str(rn),
            lambda t: dataclasses.replace(t, quota=quota),
            etag=validate.etag(request.etag),
        )
        return convert.tenant(tenant, await self.store.get_usage(rn.id))


_HOST_STATUS = (
    "state",
    "cordoned",
    "maintenance",
    "maintenance_reason",
    "assigned_instance",
    "conditions",
    "last_heartbeat",
    "cleaning_epoch",
    "cleaning_started_time",
    "last_cleaned_time",
)


def _quota(msg: common_pb2.Quota, field: str) -> Quota:
    return Quota(
        max_instances=validate.int_range(msg.max_instances, f"{field}.max_instances", 0, 100_000),
        max_volume_gib=validate.int_range(
            msg.max_volume_gib, f"{field}.max_volume_gib", 0, 100 * 1024 * 1024
        ),
    )
