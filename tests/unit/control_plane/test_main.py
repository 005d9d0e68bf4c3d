"""``bmaas-control-plane`` settings: defaults < TOML file < environment < flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from bmaas_tls import ServerTls
from control_plane.main import load_settings, parse_etcd, split_hostport
from control_plane.store.endpoints import Endpoint, Tls
from tools.region.pki import make_pki


def test_flags_file_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "cp.toml"
    cfg.write_text(
        'operator_token = "from-file"\nlease_ttl = 7\nmetrics = "127.0.0.1:9100"\ninsecure = true\n'
    )
    monkeypatch.delenv("BMAAS_OPERATOR_TOKEN", raising=False)
    monkeypatch.delenv("BMAAS_LEASE_TTL", raising=False)
    monkeypatch.delenv("BMAAS_METRICS", raising=False)
    s = load_settings(["--etcd", "http://10.0.0.5:2379", "--listen", ":7443", "--config", str(cfg)])
    assert (s.etcd_host, s.etcd_port, s.listen) == ("10.0.0.5", 2379, ":7443")
    assert s.operator_token == "from-file" and s.lease_ttl == 7 and s.controllers
    assert s.metrics == "127.0.0.1:9100"
    assert s.insecure and s.tls is None and not s.allow_fake_power
    monkeypatch.setenv("BMAAS_OPERATOR_TOKEN", "from-env")
    monkeypatch.setenv("BMAAS_LEASE_TTL", "3")
    s = load_settings(
        [
            "--etcd",
            "127.0.0.1:2379",
            "--listen",
            "0:1",
            "--config",
            str(cfg),
            "--metrics",
            "0.0.0.0:9",
            "--no-controllers",
        ]
    )
    assert s.operator_token == "from-env" and s.lease_ttl == 3
    assert s.metrics == "0.0.0.0:9" and not s.controllers


def test_bad_values_exit_with_a_message(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        split_hostport("nohostport", "--metrics")
    assert "--metrics" in str(exc.value)
    assert parse_etcd("etcd.example:2380") == [Endpoint("etcd.example", 2380)]
    for bad_list in ("", ",", "ftp://a:1", "http://a:notaport", "http://a:1/path"):
        with pytest.raises(SystemExit) as exc:
            parse_etcd(bad_list)
        assert str(exc.value).startswith("--etcd:") and "\n" not in str(exc.value)
    bad = tmp_path / "bad.toml"
    bad.write_text("not = [valid")
    with pytest.raises(SystemExit) as exc:
        load_settings(["--etcd", "x:1", "--listen", ":1", "--config", str(bad)])
    assert "--config" in str(exc.value)


def test_etcd_member_list_from_flag_file_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BMAAS_ETCD", raising=False)
    members = "http://10.0.0.1:2379, http://10.0.0.2:2379,10.0.0.3"
    s = load_settings(["--etcd", members, "--listen", ":1", "--insecure"])
    assert s.etcd == (
        Endpoint("10.0.0.1", 2379),
        Endpoint("10.0.0.2", 2379),
        Endpoint("10.0.0.3", 2379),
    )
    assert s.etcd_tls is None
    cfg = tmp_path / "cp.toml"
    cfg.write_text(
        'etcd = ["https://a:2379", "https://b:2379"]\netcd_cacert = "/ca.pem"\n'
        'etcd_cert = "/c.pem"\netcd_key = "/k.pem"\ninsecure = true\n'
    )
    s = load_settings(["--listen", ":1", "--config", str(cfg)])
    assert s.etcd == (Endpoint("a", 2379, True), Endpoint("b", 2379, True))
    assert s.etcd_tls == Tls(cacert=Path("/ca.pem"), cert=Path("/c.pem"), key=Path("/k.pem"))
    monkeypatch.setenv("BMAAS_ETCD", "http://e1:1,http://e2:2")
    s = load_settings(["--listen", ":1", "--config", str(cfg)])
    assert [ep.port for ep in s.etcd] == [1, 2]
    monkeypatch.delenv("BMAAS_ETCD")
    with pytest.raises(SystemExit) as exc:
        load_settings(["--listen", ":1"])
    assert "--etcd" in str(exc.value)
    with pytest.raises(SystemExit) as exc:
        load_settings(["--etcd", "a:1", "--listen", ":1", "--etcd-cert", "/c.pem"])
    assert "--etcd-key" in str(exc.value)


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        load_settings(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("bmaas-control-plane: error: ")
    return err


def test_tls_from_flags_and_file(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    base = ["--etcd", "a:1", "--listen", ":1"]
    flags = ["--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key)]
    agents = ["--tls-client-ca", str(pki.ca), "--agent-listen", ":7444"]
    s = load_settings([*base, *flags, *agents, "--allow-fake-power"])
    assert s.tls == ServerTls(cert=pki.server.cert, key=pki.server.key, client_ca=pki.ca)
    assert not s.insecure and s.allow_fake_power and s.agent_listen == ":7444"
    cfg = tmp_path / "cp.toml"
    cfg.write_text(
        f'tls_cert = "{pki.server.cert}"\ntls_key = "{pki.server.key}"\nallow_fake_power = true\n'
    )
    s = load_settings([*base, "--config", str(cfg)])
    assert s.tls == ServerTls(cert=pki.server.cert, key=pki.server.key)
    assert s.allow_fake_power


def test_without_tls_or_insecure_it_refuses_to_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pki = make_pki(tmp_path / "pki")
    base = ["--etcd", "a:1", "--listen", ":1"]
    assert "--insecure" in _refused(base, capsys)
    assert "go together" in _refused([*base, "--tls-cert", str(pki.server.cert)], capsys)
    both = [*base, "--insecure", "--tls-cert", str(pki.server.cert), "--tls-key", "k"]
    assert "exclude" in _refused(both, capsys)
    half = [*base, "--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key)]
    assert "--agent-listen" in _refused([*half, "--tls-client-ca", str(pki.ca)], capsys)
    assert "--agent-listen" in _refused([*half, "--agent-listen", ":2"], capsys)
    missing = [*base, "--tls-cert", str(tmp_path / "nope.pem"), "--tls-key", str(pki.server.key)]
    assert f"--tls-cert {tmp_path / 'nope.pem'}: No such file" in _refused(missing, capsys)
    not_pem = tmp_path / "key.txt"
    not_pem.write_text("secret\n")
    garbage = [*base, "--tls-cert", str(pki.server.cert), "--tls-key", str(not_pem)]
    assert "not a PEM file" in _refused(garbage, capsys)
    cfg = tmp_path / "cp.toml"
    cfg.write_text('insecure = "yes"\n')
    assert "insecure must be true or false" in _refused([*base, "--config", str(cfg)], capsys)
