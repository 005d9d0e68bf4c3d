"""etcd access through aetcd: typed records, compare-and-swap on
``mod_revision``, multi-key transactions, watches and leases.  The only
package that imports aetcd.

Public API (everything async; errors are the ``control_plane.domain.errors``
tree, e.g. ``NotFound``, ``AlreadyExists``, ``Aborted``, ``QuotaExceeded``,
``InvalidArgument``, ``Unavailable``)::

    store = await Store.connect(host, port, root="/bmaas/v1")   # or: async with ...
    await store.aclose()

    # generic records: any domain resource (Tenant, Host, InstanceType, Image, Instance,
    # Volume, Vpc, Subnet, NetworkInterface, PlacementGroup); names are AIP names
    await store.create(obj, request_id="", fingerprint="") -> obj with etag
    await store.create_or_replay(obj, request_id=...) -> Created(record, replayed)
    await store.create_or_replay(inst, request_id=..., together=[host])  # + CAS updates, one txn
    await store.get(Instance, "tenants/t1/instances/i1") -> Instance
    await store.get_many(Volume, [name, ...]) -> [Volume | None, ...]  # one round trip
    await store.list(Instance, parent="tenants/t1", page_size=50, page_token="",
                     filter="state=RUNNING AND zone=z1") -> Page(items, next_page_token, revision)
    await store.list_all(Host) -> (list[Host], revision)      # one consistent snapshot
    await store.update(obj) -> obj                           # CAS on obj.etag
    await store.update_many([instance, host]) -> [...]       # one txn, every etag compared
    await store.update_many([done], previous=[as_read])      # usage delta without a read
    await store.update_batched(obj); await store.update_many_batched(objs, previous=...)
                                                             # concurrent calls share a txn
    await store.follow_records(Instance)                     # mutate starts from the watch
    await store.mutate(Instance, name, change_fn, etag="")   # read-modify-CAS with retry
    await store.delete(Instance, name, etag="")
    store.watch(Host, start_revision=rev + 1, parent="")     # async iterator of WatchEvent
    await store.get_usage("t1") -> QuotaUsage
    await store.addresses_in_use("tenants/t1/vpcs/v/subnets/s") -> {"10.0.0.4", ...}

    # observed state from agents (written by AgentService, read by controllers)
    await store.reports.put(AgentReport(...)); await store.reports.get("h1")
    store.reports.watch(start_revision=...)

    # tenant bearer tokens: the digest of the secret only, never the token
    token = await store.tenant_tokens.issue("t1", sha256_hex)   # -> TenantToken(id, ...)
    await store.tenant_tokens.lookup(token_id) -> TenantToken | None

    # liveness: one lease per host; silence = the lease expires = key deleted
    await store.liveness.heartbeat("h1", ttl=10)
    await store.liveness.is_alive("h1"); await store.liveness.live_hosts()
    store.liveness.watch(start_revision=...)               # HeartbeatEvent(host, alive, rev)

    # leader election primitives (policy in control_plane.controllers.leader)
    store.elections.grant_lease / keepalive / campaign / resign / leader / watch
    with fenced(store.elections.fence(election, term)):   # txns here (and in tasks
        ...                                  # created here) need the seat: LeadershipLost

    store.stats.round_trips                                  # Counter of etcd RPCs

Semantics:

- **etag** = the key's ``mod_revision`` as a string; ``update``/``delete``
  compare it in the transaction and raise ``Aborted`` if it moved
  (``update_many`` raises ``RecordChanged``/``RecordGone`` naming the record).
- **create** of a tenant resource requires the tenant; with ``request_id`` it
  is idempotent (``requests/{t}/{request_id}`` is written in the same txn).
  Instances (1 slot while not TERMINATED) and volumes (``size_gib``) are
  charged to ``usage/{t}`` in the same txn that creates (or grows) them,
  comparing the counter's revision, retried when another charge of the
  tenant won, and refused with ``QuotaExceeded`` past ``Tenant.quota``.  An
  instance's slot is released by the update that makes it TERMINATED (or
  by deleting it), into ``released/{t}``; usage = charged - released, and
  charges never compare the released counter (a stale one only overstates
  usage), so creates and terminations never make each other's txn fail.
  No lock serializes a tenant's writes (on a replica or across replicas):
  the quota is checked inside the transaction, which compares the counter
  and the tenant record.  Each replica remembers the last counter values it
  read or wrote, so a create costs one txn; a stale memory, or a concurrent
  write that won, costs one failed txn whose failure branch returns the
  fresh counters.  Creates of a tenant that come while one of its creates
  is in flight on the replica go together in the next txn (group commit:
  one counter compare, the counter raised by their sum; if that txn fails,
  each is tried alone).
- **addresses**: a network interface's ``ip_address`` is claimed by an
  ``addresses/{t}/{vpc}/{s}/{ip}`` key written (compared absent) in the txn
  that creates it and deleted with it; a taken address raises
  ``AddressInUse`` (an ``AlreadyExists``) so the caller picks another.  The
  address of a stored interface never changes.
- **claims**: the same for globally unique values: a VPC's VXLAN VNI
  (``vnis/{vni}``) and an interface's MAC (``macs/{mac}``); a taken one
  raises ``VniInUse`` / ``MacInUse`` (``ClaimTaken``, an ``AlreadyExists``).
  Deleting the holder deletes its claims in the same txn, compared on their
  value (the holder's name): a claim some other record holds is never freed.
- **filter** grammar: ``field=value`` / ``field!=value`` terms joined by
  ``AND``; fields are record attributes (dotted for nested:
  ``hardware.cpus=64``); values bare or double-quoted; see
  ``control_plane.domain.filtering``.
- **page_token** is opaque, bound to (kind, parent, filter), ordering = key order.

Key layout (``keys.py``)::

    /bmaas/v1/tenants/{t}                 /bmaas/v1/hosts/{h}
    /bmaas/v1/instanceTypes/{x}           /bmaas/v1/images/{x}
    /bmaas/v1/instances/{t}/{i}           /bmaas/v1/volumes/{t}/{v}
    /bmaas/v1/vpcs/{t}/{vpc}              /bmaas/v1/subnets/{t}/{vpc}/{s}
    /bmaas/v1/networkInterfaces/{t}/{n}   /bmaas/v1/placementGroups/{t}/{g}
    /bmaas/v1/usage/{t}                   charged to the quota {"instances", "volume_gib"}
    /bmaas/v1/released/{t}                released again (usage = usage - released)
    /bmaas/v1/requests/{t}/{request_id}   idempotency record {"name", "fingerprint"}
    /bmaas/v1/tenant_tokens/{token_id}    TenantToken {"tenant", "sha256", ...}
    /bmaas/v1/addresses/{t}/{vpc}/{s}/{ip}  IP claim -> the network interface's name
    /bmaas/v1/vnis/{vni}                  VXLAN VNI claim (global) -> the VPC's name
    /bmaas/v1/macs/{mac}                  MAC claim (global) -> the network interface's name
    /bmaas/v1/agent_reports/{h}           latest AgentReport
    /bmaas/v1/heartbeats/{h}              lease-bound while the agent heartbeats
    /bmaas/v1/leases/{election}           lease-bound leader seat

Kind first (not ``tenants/{t}/instances/{i}``) so that one prefix range
lists or watches a kind across tenants (the scheduler and controllers need
that), while ``instances/{t}/`` still narrows to one tenant.

Modules, one concern each, imported in this order (no cycle; an
import-linter contract keeps it so)::

    errors, endpoints, records, keys, codec     layout, kinds, JSON, error tree
    watch_hub -> kv                             raw etcd calls, one watch per prefix
    etags, txn                                  etags; the transaction builder
    quota                                       the quota ledger (charged/released)
    paging, watching, record_cache              lists, typed watch events, followed records
    cas, claims, coalesce                       update/mutate/delete; creates; shared txns
    agent_reports, consoles, tenant_tokens, liveness, election   the side records
    store                                       ``Store``: composes all of the above
"""

from control_plane.store.errors import (
    AddressInUse,
    ClaimTaken,
    MacInUse,
    RecordChanged,
    RecordGone,
    RevisionCompacted,
    VniInUse,
)
from control_plane.store.keys import DEFAULT_ROOT, KeySpace
from control_plane.store.kv import Fence, Stats, current_fence, fenced
from control_plane.store.liveness import DEFAULT_HEARTBEAT_TTL, HeartbeatEvent
from control_plane.store.store import Created, Page, Store, WatchEvent

__all__ = [
    "AddressInUse",
    "ClaimTaken",
    "DEFAULT_HEARTBEAT_TTL",
    "Created",
    "DEFAULT_ROOT",
    "Fence",
    "HeartbeatEvent",
    "KeySpace",
    "MacInUse",
    "Page",
    "RecordChanged",
    "RecordGone",
    "RevisionCompacted",
    "Stats",
    "Store",
    "VniInUse",
    "WatchEvent",
    "current_fence",
    "fenced",
]
