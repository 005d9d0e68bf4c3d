"""Every bmctl unit test runs with a private config file location and none of
the caller's BMAAS_* variables."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ("BMAAS_ENDPOINT", "BMAAS_TOKEN", "BMAAS_CONTEXT", "BMAAS_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    return home
