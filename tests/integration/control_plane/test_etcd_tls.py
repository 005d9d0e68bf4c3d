"""etcd over TLS with client certificates, against a real etcd that
requires them (``--client-cert-auth``); a refused certificate is one line."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from control_plane.domain.errors import Unavailable
from control_plane.store import Store
from control_plane.store.endpoints import Tls, parse_endpoints
from control_plane.store.kv import op_put
from tools.region.control_plane import ControlPlaneProcess
from tools.region.etcd import EtcdServer
from tools.region.pki import Pki, make_pki

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def tls_etcd(pki: Pki) -> Iterator[EtcdServer]:
    with EtcdServer(tls=pki.server) as server:
        yield server


async def test_the_store_talks_tls_with_a_client_certificate(
    tls_etcd: EtcdServer, pki: Pki
) -> None:
    assert tls_etcd.url.startswith("https://")
    tls = Tls(cacert=pki.ca, cert=pki.client_cert, key=pki.client_key)
    store = await Store.connect(endpoints=parse_endpoints(tls_etcd.url), tls=tls)
    try:
        await store.kv.txn([], [op_put(b"/bmaas/v1/tls-probe", b"yes")])
        kv = await store.kv.get(b"/bmaas/v1/tls-probe")
        assert kv is not None and kv.value == b"yes"
    finally:
        await store.aclose()
    # without a client certificate etcd refuses the handshake
    bare = await Store.connect(endpoints=parse_endpoints(tls_etcd.url), tls=Tls(cacert=pki.ca))
    try:
        with pytest.raises(Unavailable):
            await bare.probe_quorum(timeout=3.0)
    finally:
        await bare.aclose()


def test_a_replica_starts_on_tls_and_a_refused_certificate_is_one_line(
    tls_etcd: EtcdServer, pki: Pki, tmp_path: Path
) -> None:
    flags = ("--etcd-cacert", str(pki.ca), "--etcd-cert", str(pki.client_cert))
    with ControlPlaneProcess(
        tls_etcd, extra_args=(*flags, "--etcd-key", str(pki.client_key))
    ) as cp:
        assert cp.port > 0
    # a client certificate from another CA: etcd refuses it
    rogue = make_pki(tmp_path / "rogue", name="rogue")
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "control_plane.main", "--etcd", tls_etcd.url),
            *("--listen", "127.0.0.1:0", "--etcd-wait", "2", "--no-controllers"),
            *pki.server_flags(),
            *("--etcd-cacert", str(pki.ca), "--etcd-cert", str(rogue.client_cert)),
            *("--etcd-key", str(rogue.client_key)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("bmaas-control-plane:")]
    assert len(errors) == 1, proc.stderr
    assert "etcd unreachable" in errors[0]
