"""``etcd_dump``: every key under the control plane's root with its value and
``mod_revision``, the "nothing changed in etcd" oracle of the bad-input
tests (lease-bound heartbeat keys and leader seats are left out)."""

from __future__ import annotations

from dataclasses import dataclass

import aetcd

from tools.region.etcd import EtcdServer


@dataclass(frozen=True, slots=True)
class Entry:
    value: bytes
    mod_revision: int


async def etcd_dump(etcd: EtcdServer, prefix: bytes = b"/bmaas/") -> dict[bytes, Entry]:
    """Every key under *prefix* except lease-bound heartbeats and leader seats."""
    async with aetcd.Client(host=etcd.host, port=etcd.port) as client:
        result = await client.get_prefix(prefix)
    out: dict[bytes, Entry] = {}
    for kv in result:
        if b"/heartbeats/" in kv.key or b"/leases/" in kv.key:
            continue
        out[kv.key] = Entry(kv.value, kv.mod_revision)
    return out
