"""The etcd key layout (pure functions; no I/O).

Kind first, then the ids of the AIP name, so one prefix range lists or
watches one kind across all tenants and a longer prefix narrows to a parent::

    {root}/tenants/{t}                         Tenant
    {root}/hosts/{h}                           Host
    {root}/instanceTypes/{type}                InstanceType
    {root}/images/{image}                      Image
    {root}/instances/{t}/{i}                   Instance      (AIP tenants/{t}/instances/{i})
    {root}/volumes/{t}/{v}                     Volume
    {root}/vpcs/{t}/{vpc}                      Vpc
    {root}/subnets/{t}/{vpc}/{s}               Subnet
    {root}/networkInterfaces/{t}/{n}           NetworkInterface
    {root}/placementGroups/{t}/{g}             PlacementGroup
    {root}/usage/{t}                           QuotaUsage charged to tenant t (only grows)
    {root}/released/{t}                        QuotaUsage released by tenant t (only grows)
    {root}/requests/{t}/{request_id}           idempotency record -> {"name", "fingerprint"}
    {root}/tenant_tokens/{token_id}            TenantToken (digest of the secret only)
    {root}/addresses/{t}/{vpc}/{s}/{ip}        IP claim of a subnet -> the NIC's name
    {root}/vnis/{vni}                          VXLAN VNI claim (global, decimal) -> the VPC's name
    {root}/macs/{mac}                          MAC claim (global, lower case) -> the NIC's name
    {root}/agent_reports/{h}                   latest AgentReport of host h
    {root}/consoles/{t}/{i}                    serial console tail of instance i (agent-sent)
    {root}/heartbeats/{h}                      lease-bound; exists while h's agent heartbeats
    {root}/leases/{election}                   lease-bound; value = the leader's identity

Claim keys (``addresses/``, ``vnis/``, ``macs/``) make a value unique: the
txn that creates the holder puts the claim compared absent, the txn that
deletes the holder deletes it compared on its value (the holder's name).

``root`` defaults to ``/bmaas/v1``.  Ids never contain ``/`` (RFC 1123
labels), so every "{prefix}/" range is exact: ``t1/`` never matches ``t10/``.
"""

from __future__ import annotations

from dataclasses import dataclass

from control_plane.domain.errors import InvalidArgument
from control_plane.domain.names import COLLECTIONS, ResourceName, parse_name
from control_plane.store.records import Claim

DEFAULT_ROOT = "/bmaas/v1"


def prefix_range_end(prefix: bytes) -> bytes:
    """The ``range_end`` that makes ``[prefix, end)`` cover every key starting with *prefix*."""
    buf = bytearray(prefix)
    for i in reversed(range(len(buf))):
        if buf[i] < 0xFF:
            buf[i] += 1
            return bytes(buf[: i + 1])
    return b"\0"


@dataclass(frozen=True, slots=True)
class KeySpace:
    root: str = DEFAULT_ROOT

    def resource(self, rn: ResourceName) -> bytes:
        return f"{self.root}/{rn.collection}/{'/'.join(rn.ids)}".encode()

    def of_name(self, name: str, *, collection: str | None = None) -> bytes:
        return self.resource(parse_name(name, collection=collection))

    def collection_prefix(self, collection: str, parent_ids: tuple[str, ...] = ()) -> bytes:
        """Prefix of every *collection* key below the parent with *parent_ids*."""
        tail = "".join(f"{i}/" for i in parent_ids)
        return f"{self.root}/{collection}/{tail}".encode()

    def name_of_key(self, key: bytes) -> str:
        """Invert ``resource``: the AIP name stored under *key*."""
        rest = key.decode()[len(self.root) + 1 :]
        collection, _, ids = rest.partition("/")
        return str(ResourceName(collection, tuple(ids.split("/"))))

    def usage(self, tenant: str) -> bytes:
        return f"{self.root}/usage/{tenant}".encode()

    def released(self, tenant: str) -> bytes:
        return f"{self.root}/released/{tenant}".encode()

    def released_prefix(self) -> bytes:
        return f"{self.root}/released/".encode()

    def usage_prefix(self) -> bytes:
        return f"{self.root}/usage/".encode()

    def request(self, tenant: str, request_id: str) -> bytes:
        return f"{self.root}/requests/{tenant}/{request_id}".encode()

    def address(self, subnet: str, ip: str) -> bytes:
        """The claim key of *ip* in *subnet* (an AIP subnet name)."""
        ids = parse_name(subnet, collection="subnets").ids
        return f"{self.root}/addresses/{'/'.join(ids)}/{ip}".encode()

    def addresses_prefix(self, subnet: str) -> bytes:
        ids = parse_name(subnet, collection="subnets").ids
        return f"{self.root}/addresses/{'/'.join(ids)}/".encode()

    def vni(self, vni: int | str) -> bytes:
        """The claim key of VXLAN network identifier *vni* (global)."""
        return f"{self.root}/vnis/{int(vni)}".encode()

    def mac(self, mac: str) -> bytes:
        """The claim key of MAC address *mac* (global)."""
        return f"{self.root}/macs/{mac.lower()}".encode()

    def claim(self, claim: Claim) -> bytes:
        """The key of *claim* (``records.claims_of``)."""
        if claim.kind == "address":
            return self.address(claim.scope, claim.value)
        if claim.kind == "mac":
            return self.mac(claim.value)
        if claim.kind == "vni":
            return self.vni(claim.value)
        raise ValueError(f"unknown claim kind {claim.kind!r}")

    def tenant_token(self, token_id: str) -> bytes:
        return f"{self.root}/tenant_tokens/{token_id}".encode()

    def agent_report(self, host: str) -> bytes:
        return f"{self.root}/agent_reports/{host}".encode()

    def agent_reports_prefix(self) -> bytes:
        return f"{self.root}/agent_reports/".encode()

    def console(self, instance: str) -> bytes:
        ids = parse_name(instance, collection="instances").ids
        return f"{self.root}/consoles/{'/'.join(ids)}".encode()

    def heartbeat(self, host: str) -> bytes:
        return f"{self.root}/heartbeats/{host}".encode()

    def heartbeats_prefix(self) -> bytes:
        return f"{self.root}/heartbeats/".encode()

    def election(self, election: str) -> bytes:
        return f"{self.root}/leases/{election}".encode()

    def tenant(self, tenant: str) -> bytes:
        return f"{self.root}/tenants/{tenant}".encode()

    def last_segment(self, key: bytes) -> str:
        return key.decode().rsplit("/", 1)[-1]


def parent_ids(collection: str, parent: str) -> tuple[str, ...]:
    """Ids of *parent* (an AIP name or ``""``) for listing *collection* under it.

    ``parent_ids("instances", "tenants/t1") == ("t1",)``; an empty parent lists
    across all parents.
    """
    if not parent:
        return ()
    rn = parse_name(parent)
    ancestors = COLLECTIONS[collection]
    if (*COLLECTIONS[rn.collection], rn.collection) != ancestors[: len(rn.ids)]:
        raise InvalidArgument(f"parent {parent!r} cannot contain {collection}")
    return rn.ids
