"""OperatorService tenant-token RPCs: issue, list, revoke.

``IssueTenantToken`` names the token after the tenant and request id
(``auth.derived_token_id``): a retry finds the token the first call stored
and answers ``replayed`` without the secret, which exists only in the first
response.  A token lives ``ttl_seconds`` (default ``DEFAULT_TOKEN_TTL``, 30
days; at most ``MAX_TOKEN_TTL``, 365 days).  ``ListTenantTokens`` shows
what the record holds -- id, creation, expiry, last use, revocation --
and never a secret (the record has only its digest).  ``RevokeTenantToken``
marks the record; every replica's token watch drops it from its cache
(``api.token_upkeep``), so it is refused everywhere within a second.  A
token id of another tenant is NOT_FOUND, as a missing one is.
"""

from __future__ import annotations

from bmaas.v1 import operator_pb2, operator_pb2_grpc
from control_plane.api import auth, convert, validate
from control_plane.api.base import Servicer
from control_plane.api.errors import InvalidField, MissingResource
from control_plane.api.rpc import Context, unary
from control_plane.domain.errors import AlreadyExists
from control_plane.domain.tenant import (
    DEFAULT_TOKEN_TTL,
    MAX_TOKEN_TTL,
    Tenant,
    TenantToken,
)

SERVICE = "OperatorService"


def token_info(token: TenantToken) -> operator_pb2.TenantTokenInfo:
    return operator_pb2.TenantTokenInfo(
        tenant=f"tenants/{token.tenant}",
        token_id=token.id,
        create_time=convert.timestamp(token.create_time),
        expire_time=convert.timestamp(token.expires),
        last_use_time=convert.timestamp(token.last_use_time),
        revoke_time=convert.timestamp(token.revoke_time),
    )


class TokensMixin(Servicer, operator_pb2_grpc.OperatorServiceServicer):
    @unary(SERVICE)
    async def IssueTenantToken(
        self, request: operator_pb2.IssueTenantTokenRequest, context: Context
    ) -> operator_pb2.IssueTenantTokenResponse:
        self.operator(context)
        rid = validate.request_id(request.request_id)
        rn = validate.name(request.tenant, "tenant", "tenants")
        if request.ttl_seconds > MAX_TOKEN_TTL:
            raise InvalidField("ttl_seconds", f"must be at most {MAX_TOKEN_TTL} (365 days)")
        ttl = float(request.ttl_seconds or DEFAULT_TOKEN_TTL)
        await self.ref(Tenant, str(rn), "tenant")
        secret = auth.new_secret()
        digest = auth.digest(secret)
        token_id = auth.derived_token_id(rn.id, rid) if rid else ""
        token = await self.store.tenant_tokens.issue(rn.id, digest, ttl=ttl, token_id=token_id)
        if token.tenant != rn.id:
            raise AlreadyExists("request_id: already used to issue a token of another tenant")
        replayed = not auth.same_digest(token.sha256, digest)
        return operator_pb2.IssueTenantTokenResponse(
            tenant=str(rn),
            token="" if replayed else auth.tenant_token(token.id, secret),
            token_id=token.id,
            replayed=replayed,
            create_time=convert.timestamp(token.create_time),
            expire_time=convert.timestamp(token.expires),
        )

    @unary(SERVICE)
    async def ListTenantTokens(
        self, request: operator_pb2.ListTenantTokensRequest, context: Context
    ) -> operator_pb2.ListTenantTokensResponse:
        self.operator(context)
        rn = validate.name(request.tenant, "tenant", "tenants")
        await self.ref(Tenant, str(rn), "tenant")
        tokens = await self.store.tenant_tokens.list(rn.id)
        return operator_pb2.ListTenantTokensResponse(tokens=[token_info(t) for t in tokens])

    @unary(SERVICE)
    async def RevokeTenantToken(
        self, request: operator_pb2.RevokeTenantTokenRequest, context: Context
    ) -> operator_pb2.TenantTokenInfo:
        self.operator(context)
        rn = validate.name(request.tenant, "tenant", "tenants")
        token_id = validate.text(request.token_id, "token_id", max_len=64, required_=True)
        shown = f"{rn}/tokens/{token_id}"
        stored = await self.store.tenant_tokens.lookup(token_id)
        if stored is None or stored.tenant != rn.id:
            raise MissingResource(shown, field="token_id")
        revoked = await self.store.tenant_tokens.revoke(token_id)
        if revoked is None:
            raise MissingResource(shown, field="token_id")
        return token_info(revoked)
