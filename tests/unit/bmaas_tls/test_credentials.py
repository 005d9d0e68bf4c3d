"""``bmaas_tls``: the host a certificate names, the settings that exclude
each other, and files that cannot be used (one line naming the file)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bmaas_tls import (
    ClientTls,
    ServerTls,
    TlsError,
    TlsFileError,
    channel_credentials,
    peer_host,
    server_credentials,
)


def test_peer_host_from_the_uri_san() -> None:
    san = "x509_subject_alternative_name"
    assert peer_host({san: [b"bmaas-host:h1"]}) == "h1"
    assert peer_host({"x509_uri_subject_alternative_name": [b"bmaas-host:h-2"]}) == "h-2"
    assert peer_host({san: [b"127.0.0.1", b"localhost"]}) is None  # a server certificate
    assert peer_host({}) is None  # no certificate at all
    assert peer_host({san: [b"bmaas-host:a", b"bmaas-host:b"]}) is None  # ambiguous


def test_settings_that_exclude_each_other() -> None:
    with pytest.raises(TlsError, match="exclude"):
        ClientTls(insecure=True, ca=Path("ca.pem"))
    with pytest.raises(TlsError, match="needs its key"):
        ClientTls(cert=Path("c.pem"))
    with pytest.raises(TlsError):
        channel_credentials(ClientTls(insecure=True))


def test_unusable_files_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    with pytest.raises(TlsFileError) as exc:
        channel_credentials(ClientTls(ca=missing))
    assert str(exc.value) == f"CA {missing}: No such file or directory"
    text = tmp_path / "ca.txt"
    text.write_text("not a certificate\n")
    with pytest.raises(TlsFileError, match="not a PEM file"):
        channel_credentials(ClientTls(ca=text))
    with pytest.raises(TlsFileError, match="--tls-key"):
        server_credentials(ServerTls(cert=missing, key=text))  # the key is read first
    pem = tmp_path / "x.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\n")  # read, not parsed, before the CA
    with pytest.raises(TlsFileError, match="--tls-client-ca"):
        server_credentials(
            ServerTls(cert=pem, key=pem, client_ca=missing), require_client_cert=True
        )
    with pytest.raises(TlsError, match="--tls-client-ca"):
        server_credentials(ServerTls(cert=pem, key=pem), require_client_cert=True)
