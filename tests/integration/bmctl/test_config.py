"""Contexts against a real control plane: ``bmctl config`` writes the file
(mode 0600) and the chosen context's endpoint and token are used; flags beat
the environment, which beats the file's current context."""

from __future__ import annotations

import stat
import tomllib
from pathlib import Path

import pytest

from bmctl import exitcodes
from tests.integration.bmctl.conftest import (
    OPERATOR_TOKEN,
    Bmctl,
    World,
    covers,
    default_pki,
    make_pki,
)


@covers(
    "config set-context",
    "config use-context",
    "config get-contexts",
    "config current-context",
    "config delete-context",
    "tenant list",
    "instance list",
)
def test_contexts_choose_endpoint_and_token(
    world: World, endpoint: str, bmctl: Bmctl, isolated_env: Path, tmp_path: Path
) -> None:
    path = isolated_env / ".config" / "bmaas" / "config.toml"
    none = bmctl.at(None, None)  # no --endpoint/--token
    assert "no current-context" in none("config", "current-context", expect=2).err
    token_file = tmp_path / "op.token"
    token_file.write_text(OPERATOR_TOKEN + "\n")
    made = none(
        "config", "set-context", "ops", "--endpoint", endpoint, "--token-file", str(token_file)
    )
    assert 'context "ops" created' in made.err and 'switched to context "ops"' in made.err
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert none.json("tenant", "list")  # the operator, through the context
    none("config", "set-context", "acme", "--endpoint", endpoint, "--token", world.t.token or "")
    assert none("config", "current-context").out.strip() == "ops"  # not switched
    table = none("config", "get-contexts").out.splitlines()
    assert table[0].split() == ["CURRENT", "NAME", "ENDPOINT", "TOKEN"]
    assert table[1].split() == ["acme", endpoint, "set"]
    assert table[2].split() == ["*", "ops", endpoint, "file", str(token_file)]
    listed = none("-o", "yaml", "config", "get-contexts").yaml()
    assert [c["name"] for c in listed] == ["acme", "ops"] and listed[1]["current"] is True
    assert world.t.token not in none("-o", "json", "config", "get-contexts").out  # no secrets
    # --context for one command; the tenant sees only its own resources
    assert none.json("--context", "acme", "instance", "list") == []
    assert none("--context", "acme", "tenant", "list", expect=1).code == 1  # not the operator
    none("config", "use-context", "acme")
    assert none("-o", "json", "config", "current-context").json() == {"current-context": "acme"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "known: acme, ops" in none("config", "use-context", "nope", expect=2).err
    none("config", "delete-context", "acme")
    assert none("config", "current-context", expect=2).code == exitcodes.USAGE
    assert "acme" not in path.read_text()


@covers("tenant list")
def test_precedence_flags_env_config(
    world: World,
    endpoint: str,
    bmctl: Bmctl,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = tmp_path / "elsewhere.toml"
    monkeypatch.setenv("BMAAS_CONFIG", str(config))
    none = bmctl.at(None, None)
    # the file's context: a dead endpoint and the operator token
    none("config", "set-context", "file", "--endpoint", "127.0.0.1:1", "--token", OPERATOR_TOKEN)
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert none("--request-timeout", "2", "tenant", "list", expect=5).code == 5
    # the environment beats the file
    monkeypatch.setenv("BMAAS_ENDPOINT", endpoint)
    assert none.json("tenant", "list")
    monkeypatch.setenv("BMAAS_TOKEN", "env-wrong")
    assert "UNAUTHENTICATED" in none("tenant", "list", expect=1).err
    # flags beat the environment
    assert none.json("--token", OPERATOR_TOKEN, "tenant", "list")
    assert none("--endpoint", "127.0.0.1:1", "--token", OPERATOR_TOKEN, "tenant", "list", expect=5)
    # BMAAS_CONTEXT picks a context (still below BMAAS_ENDPOINT / BMAAS_TOKEN)
    monkeypatch.delenv("BMAAS_TOKEN")
    monkeypatch.setenv("BMAAS_CONTEXT", "nope")
    assert "no context 'nope'" in none("tenant", "list", expect=2).err
    monkeypatch.setenv("BMAAS_CONTEXT", "file")
    assert none.json("tenant", "list")


@covers("config set-context", "config current-context", "config get-contexts", "tenant list")
def test_context_named_outside_the_bmp_round_trips(
    world: World, endpoint: str, bmctl: Bmctl, isolated_env: Path
) -> None:
    path = isolated_env / ".config" / "bmaas" / "config.toml"
    none = bmctl.at(None, None)
    name = 'prod 🚀 \U0001d54f"quoted"'  # outside the BMP, and a quote
    none("config", "set-context", name, "--endpoint", endpoint, "--token", OPERATOR_TOKEN)
    assert tomllib.loads(path.read_text(encoding="utf-8"))["current-context"] == name
    assert "\\ud83d" not in path.read_text(encoding="utf-8").lower()  # no surrogate escapes
    # every later call still reads the file, and the context works
    assert none("config", "current-context").out.strip() == name
    assert none.json("tenant", "list")
    assert none.json("--context", name, "tenant", "list")
    listed = none("-o", "json", "config", "get-contexts").json()
    assert [c["name"] for c in listed] == [name]


@covers("config set-context", "tenant list")
def test_a_context_carries_the_regions_ca(
    endpoint: str, bmctl: Bmctl, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("BMAAS_CA")  # only the context says which CA to trust
    none = bmctl.at(None, None)
    ca = default_pki().ca
    none("config", "set-context", "ops", "--endpoint", endpoint, "--token", OPERATOR_TOKEN)
    refused = none("tenant", "list", expect=exitcodes.UNREACHABLE)  # the system's roots
    assert "CERTIFICATE_VERIFY_FAILED" in refused.err
    none("config", "set-context", "ops", "--ca", str(ca))
    assert none.json("config", "get-contexts")[0]["ca"] == str(ca)
    assert none.json("tenant", "list") == []  # trusted through the context
    rogue = make_pki(tmp_path / "rogue", name="rogue")
    other = none("--ca", str(rogue.ca), "tenant", "list", expect=exitcodes.UNREACHABLE)
    assert "CERTIFICATE_VERIFY_FAILED" in other.err  # the flag beats the context
    bad = none("config", "set-context", "ops", "--ca", str(tmp_path / "none.pem"), expect=2)
    assert "none.pem" in bad.err
    assert none.json("config", "get-contexts")[0]["ca"] == str(ca)  # unchanged
