"""Config file and precedence: flags > (--context) > environment > context of
the file; the file is written 0600 and round-trips; bad files are one clear
error with the usage exit status."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from bmctl import exitcodes
from bmctl.client import CliError
from bmctl.config import Config, config_path, resolve


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_config_path_follows_bmaas_config_then_xdg_then_home(tmp_path: Path) -> None:
    assert config_path({"BMAAS_CONFIG": "/x/c.toml"}) == Path("/x/c.toml")
    assert config_path({"XDG_CONFIG_HOME": "/xdg", "HOME": "/h"}) == Path("/xdg/bmaas/config.toml")
    assert config_path({"HOME": "/h"}) == Path("/h/.config/bmaas/config.toml")


def test_save_is_0600_and_round_trips(tmp_path: Path) -> None:
    cfg = Config(tmp_path / "d" / "config.toml", "a b")
    cfg.contexts = {
        "a b": {"endpoint": "h:1,h:2", "token": 'quo"te\\\n'},
        "ops": {"endpoint": "h:3", "token-file": "/t"},
    }
    cfg.save()
    assert stat.S_IMODE(cfg.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cfg.path.parent.stat().st_mode) == 0o700
    back = Config.load(cfg.path)
    assert (back.current_context, back.contexts) == (cfg.current_context, cfg.contexts)
    cfg.path.chmod(0o644)
    cfg.save()  # rewriting tightens it again
    assert stat.S_IMODE(cfg.path.stat().st_mode) == 0o600


CONFIG = """\
current-context = "file"

[contexts.file]
endpoint = "file:1"
token = "file-token"

[contexts.other]
endpoint = "other:1"
token-file = "{token_file}"
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    token_file = write(tmp_path / "other.token", "other-token\n")
    path = write(tmp_path / "config.toml", CONFIG.format(token_file=token_file))
    return {"BMAAS_CONFIG": str(path)}


def test_precedence(env: dict[str, str]) -> None:
    none = {"endpoint": "", "token": "", "token_file": "", "context": ""}
    got = resolve(**none, env=env)
    assert (got.endpoint, got.token, got.context) == ("file:1", "file-token", "file")
    env_set = {**env, "BMAAS_ENDPOINT": "env:1", "BMAAS_TOKEN": "env-token"}
    got = resolve(**none, env=env_set)
    assert (got.endpoint, got.token) == ("env:1", "env-token")  # env beats the file
    got = resolve(**{**none, "endpoint": "flag:1", "token": "flag-token"}, env=env_set)
    assert (got.endpoint, got.token) == ("flag:1", "flag-token")  # flags beat env
    got = resolve(**{**none, "context": "other"}, env=env_set)
    assert (got.endpoint, got.token) == ("other:1", "other-token")  # --context is a flag
    got = resolve(**none, env={**env, "BMAAS_CONTEXT": "other"})
    assert (got.endpoint, got.token, got.context) == ("other:1", "other-token", "other")
    got = resolve(**none, env={**env_set, "BMAAS_CONTEXT": "other"})
    assert (got.endpoint, got.token) == ("env:1", "env-token")  # a context by env: below env


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("current-context = ", "invalid TOML"),
        ("[contexts.a]\nendpoint = 1\n", "contexts.a.endpoint must be a string"),
        ("[contexts.a]\nendpont = 'x'\n", "unknown key 'endpont'"),
        ("colour = 'x'\n", "unknown key 'colour'"),
    ],
)
def test_bad_config_is_a_usage_error(tmp_path: Path, text: str, problem: str) -> None:
    path = write(tmp_path / "config.toml", text)
    with pytest.raises(CliError) as exc:
        resolve(
            endpoint="e:1", token="t", token_file="", context="", env={"BMAAS_CONFIG": str(path)}
        )
    assert exc.value.exit_code == exitcodes.USAGE and problem in str(exc.value)
    assert str(path) in str(exc.value)


def test_unknown_context_and_missing_token_file(env: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(CliError) as exc:
        resolve(endpoint="", token="", token_file="", context="nope", env=env)
    assert exc.value.exit_code == exitcodes.USAGE and "known: file, other" in str(exc.value)
    with pytest.raises(CliError) as exc:
        resolve(endpoint="", token="", token_file=str(tmp_path / "gone"), context="", env=env)
    assert exc.value.exit_code == exitcodes.USAGE and "--token-file" in str(exc.value)
    assert "No such file" in str(exc.value)


@pytest.mark.parametrize(
    "name",
    ["🚀", "prod 🚀", "\U0001d54f\U0010ffff", 'a"b\\c', "tab\there", "é", "[x.y]", "ctl\x01\x7f"],
)
def test_any_name_and_value_round_trip(tmp_path: Path, name: str) -> None:
    cfg = Config(tmp_path / "config.toml", name)
    cfg.contexts = {name: {"endpoint": f"{name}:1", "token": name + "\n" + name}}
    cfg.save()
    text = cfg.path.read_bytes().decode("utf-8")  # strict UTF-8: no lone surrogates
    back = Config.load(cfg.path)
    assert (back.current_context, back.contexts) == (name, cfg.contexts)
    if ord(max(name)) > 0xFFFF:
        assert max(name) in text  # written as itself, not as an escape
