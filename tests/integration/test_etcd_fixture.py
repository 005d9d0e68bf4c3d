"""The etcd fixture runs a real server reachable through aetcd."""

from __future__ import annotations

from typing import Any

from tools.region.etcd import EtcdServer


async def test_put_then_get_round_trips_through_real_etcd(
    etcd: EtcdServer, etcd_client: Any
) -> None:
    await etcd_client.put(b"/bmaas/test/key", b"value-1")
    got = await etcd_client.get(b"/bmaas/test/key")
    assert got is not None
    assert got.value == b"value-1"
    assert got.mod_revision >= 2


def test_server_data_dir_is_removed_on_stop() -> None:
    server = EtcdServer().start()
    data_dir = server.data_dir
    assert data_dir.exists()
    server.stop()
    assert not data_dir.exists()
    assert not server._healthy()
