"""Tenants and their quotas.

Usage against the quota is not a field of ``Tenant``: the store keeps it in a
separate counter record (``QuotaUsage``) that is compared-and-swapped in the
same etcd transaction as every create/delete that changes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from control_plane.domain.names import tenant_name


@dataclass(frozen=True, slots=True, kw_only=True)
class Quota:
    max_instances: int = 10
    max_volume_gib: int = 10_240


@dataclass(frozen=True, slots=True, kw_only=True)
class QuotaUsage:
    instances: int = 0
    volume_gib: int = 0

    def __add__(self, other: QuotaUsage) -> QuotaUsage:
        return QuotaUsage(
            instances=self.instances + other.instances,
            volume_gib=self.volume_gib + other.volume_gib,
        )

    def __sub__(self, other: QuotaUsage) -> QuotaUsage:
        return QuotaUsage(
            instances=self.instances - other.instances,
            volume_gib=self.volume_gib - other.volume_gib,
        )

    def fits(self, quota: Quota) -> bool:
        return self.instances <= quota.max_instances and self.volume_gib <= quota.max_volume_gib

    @property
    def is_zero(self) -> bool:
        return self.instances == 0 and self.volume_gib == 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Tenant:
    COLLECTION: ClassVar[str] = "tenants"

    id: str
    display_name: str = ""
    quota: Quota = field(default_factory=Quota)
    etag: str = ""
    create_time: float = 0.0
    update_time: float = 0.0

    @property
    def name(self) -> str:
        return tenant_name(self.id)


#: lifetime of a tenant token issued without a TTL
DEFAULT_TOKEN_TTL = 30 * 24 * 3600
#: the longest lifetime a tenant token may be issued with
MAX_TOKEN_TTL = 365 * 24 * 3600


@dataclass(frozen=True, slots=True, kw_only=True)
class TenantToken:
    """A tenant bearer token as stored: its id and the SHA-256 hex digest of
    its secret (the secret itself is never stored).  Times are Unix seconds;
    ``expire_time`` 0 (a record written before tokens expired) means
    ``create_time + DEFAULT_TOKEN_TTL``; ``revoke_time`` 0 means not revoked;
    ``last_use_time`` is written at most once a minute (``api.auth``)."""

    id: str = ""
    tenant: str
    sha256: str
    create_time: float = 0.0
    expire_time: float = 0.0
    last_use_time: float = 0.0
    revoke_time: float = 0.0

    @property
    def expires(self) -> float:
        return self.expire_time or self.create_time + DEFAULT_TOKEN_TTL

    def valid_at(self, now: float) -> bool:
        """Neither revoked nor expired at *now*."""
        return not self.revoke_time and now < self.expires
