"""A throwaway PKI for etcd over TLS, made with the ``openssl`` command.

``make_pki(directory)`` writes a CA, a server certificate (for 127.0.0.1
and localhost, usable as a client too) and a client certificate, each valid
for a day: what ``EtcdServer(tls=pki.server)`` and a control plane given
``--etcd-cacert/--etcd-cert/--etcd-key`` need to talk TLS on loopback.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from tools.region.etcd import EtcdTlsFiles


@dataclass(frozen=True, slots=True)
class Pki:
    """A throwaway CA with a server certificate (127.0.0.1, localhost) and a
    client certificate, made with the ``openssl`` command."""

    ca: Path
    server: EtcdTlsFiles
    client_cert: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(directory: Path, *, name: str = "bmaas") -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl(
        "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
        "-subj", f"/CN={name}-ca", cwd=directory,
    )  # fmt: skip
    for who, usage in (("server", "serverAuth,clientAuth"), ("client", "clientAuth")):
        ext = directory / f"{who}.ext"
        ext.write_text(f"subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage={usage}\n")
        _openssl(
            "req", *ec, "-keyout", f"{who}.key", "-out", f"{who}.csr",
            "-subj", f"/CN={name}-{who}", cwd=directory,
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", f"{who}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{who}.pem", "-days", "1", "-extfile", ext.name,
            cwd=directory,
        )  # fmt: skip
    return Pki(
        ca=directory / "ca.pem",
        server=EtcdTlsFiles(
            cert=directory / "server.pem",
            key=directory / "server.key",
            client_ca=directory / "ca.pem",
        ),
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
    )
