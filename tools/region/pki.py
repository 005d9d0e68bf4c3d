"""The region's PKI, made with the ``openssl`` command.

``make_pki(directory)`` writes a CA, a server certificate (for 127.0.0.1
and localhost, usable as a client too) and a client certificate, each valid
for a day: what ``EtcdServer(tls=pki.server)``, a control plane's
``--tls-cert/--tls-key`` (and ``--etcd-cacert/--etcd-cert/--etcd-key``) and
a client's ``--ca`` need to talk TLS on loopback.  ``Pki.issue_host(id)``
signs an agent's client certificate naming its host (CN and the URI SAN
``bmaas-host:<id>``), kept under ``hosts/`` of the directory.

``default_pki()`` is one PKI per process, made on first use in a temp
directory removed at exit: what the launchers use unless given another, so
every control plane, agent and client a test or benchmark starts speaks TLS
with the same CA.  Keys are written 0600.
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from bmaas_tls import HOST_URI_PREFIX, ClientTls, ServerTls
from tools.region.etcd import EtcdTlsFiles

_EC = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


@dataclass(frozen=True, slots=True)
class HostCert:
    """An agent's client certificate and key."""

    host_id: str
    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class Pki:
    """A CA with a server certificate (127.0.0.1, localhost) and a client
    certificate, made with the ``openssl`` command."""

    ca: Path
    server: EtcdTlsFiles
    client_cert: Path
    client_key: Path

    @property
    def directory(self) -> Path:
        return self.ca.parent

    def server_tls(self, *, client_ca: bool = False) -> ServerTls:
        """A control plane's TLS: the server certificate, and with
        *client_ca* this CA for the agents' client certificates."""
        return ServerTls(
            cert=self.server.cert, key=self.server.key, client_ca=self.ca if client_ca else None
        )

    def server_flags(self, *, agents: bool = False) -> tuple[str, ...]:
        """``bmaas-control-plane`` flags for ``server_tls()``; with *agents*,
        also an agent port on loopback that requires client certificates
        from this CA (agents prove their host)."""
        flags: tuple[str, ...] = ("--tls-cert", str(self.server.cert))
        flags += ("--tls-key", str(self.server.key))
        if agents:
            flags += ("--tls-client-ca", str(self.ca), "--agent-listen", "127.0.0.1:0")
        return flags

    def client_tls(self, host: HostCert | None = None) -> ClientTls:
        """Trust this CA; present *host*'s certificate if given."""
        if host is None:
            return ClientTls(ca=self.ca)
        return ClientTls(ca=self.ca, cert=host.cert, key=host.key)

    def issue_host(self, host_id: str) -> HostCert:
        """A client certificate for the agent of ``hosts/<host_id>`` (made once)."""
        directory = self.directory / "hosts"
        directory.mkdir(mode=0o700, exist_ok=True)
        cert, key = directory / f"{host_id}.pem", directory / f"{host_id}.key"
        with _LOCK:
            if not cert.exists():
                _sign(
                    self.directory,
                    out=cert,
                    key=key,
                    subject=f"/CN={host_id}",
                    ext=f"subjectAltName=URI:{HOST_URI_PREFIX}{host_id}\n"
                    "extendedKeyUsage=clientAuth\n",
                )
        return HostCert(host_id, cert, key)


_LOCK = threading.Lock()


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _sign(directory: Path, *, out: Path, key: Path, subject: str, ext: str) -> None:
    """A key and a certificate for *subject*, signed by ``ca.pem`` of *directory*."""
    csr, extfile = out.with_suffix(".csr"), out.with_suffix(".ext")
    extfile.write_text(ext)
    _openssl("req", *_EC, "-keyout", str(key), "-out", str(csr), "-subj", subject, cwd=directory)
    key.chmod(0o600)
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", str(out), "-days", "1", "-extfile", str(extfile),
        cwd=directory,
    )  # fmt: skip
    csr.unlink()
    extfile.unlink()


def make_pki(directory: Path, *, name: str = "bmaas") -> Pki:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    _openssl(
        "req", "-x509", *_EC, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
        "-subj", f"/CN={name}-ca", cwd=directory,
    )  # fmt: skip
    (directory / "ca.key").chmod(0o600)
    for who, usage in (("server", "serverAuth,clientAuth"), ("client", "clientAuth")):
        _sign(
            directory,
            out=directory / f"{who}.pem",
            key=directory / f"{who}.key",
            subject=f"/CN={name}-{who}",
            ext=f"subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage={usage}\n",
        )
    return load_pki(directory)


def load_pki(directory: Path) -> Pki:
    """The PKI ``make_pki`` wrote to *directory* earlier (the demo's, after a restart)."""
    ca = directory / "ca.pem"
    server = EtcdTlsFiles(cert=directory / "server.pem", key=directory / "server.key", client_ca=ca)
    return Pki(ca, server, directory / "client.pem", directory / "client.key")


_default: Pki | None = None


def default_pki() -> Pki:
    """This process's PKI (made on first use, removed at exit)."""
    global _default
    with _LOCK:
        if _default is None:
            directory = Path(tempfile.mkdtemp(prefix="bmaas-pki-"))
            atexit.register(shutil.rmtree, directory, ignore_errors=True)
            _default = make_pki(directory / "region")
        return _default
