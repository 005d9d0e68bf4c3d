"""Every command of bmctl's argparse tree is driven by some test here: each
test declares its commands with ``@covers`` (the ``bmctl`` fixture fails a
test that declares a command it never ran), and this test fails when a
command of the tree is declared nowhere - a new verb needs a test."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import tests.integration.bmctl as package
from bmctl import main as cli
from bmctl.local import commands_of


def declared_commands() -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("test_"):
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for name, func in inspect.getmembers(module, inspect.isfunction):
            if not name.startswith("test_"):
                continue
            for mark in getattr(func, "pytestmark", []):
                if mark.name == "covers":
                    out |= {tuple(cmd.split()) for cmd in mark.args}  # type: ignore[misc]
    return out


def test_every_command_has_a_test() -> None:
    tree = set(commands_of(cli.build_parser()))
    declared = declared_commands()
    untested = sorted(" ".join(c) for c in tree - declared)
    assert not untested, f"bmctl commands without a test: {untested}"
    unknown = sorted(" ".join(c) for c in declared - tree)
    assert not unknown, f"@covers names commands bmctl does not have: {unknown}"
    assert len(tree) > 50
