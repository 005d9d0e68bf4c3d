"""Running one target under libFuzzer with the card's code instrumented.

``run(module, args)`` imports the target module inside
``atheris``'s ``instrument_imports(include=["offload"])`` (every ``offload``
module the target pulls in gets coverage callbacks), builds its per-input
function with ``make()`` and hands control to libFuzzer, which parses
``args`` (flags such as ``-runs=N``, ``-timeout=S``, ``-max_total_time=S``,
then corpus directories: new inputs go to the first one) and exits the
process: 0 when it finished, non-zero on a crash, a timeout or an
out-of-memory, after writing the input to ``-artifact_prefix``.  A target's
``MAX_LEN`` becomes ``-max_len`` unless the caller gave one.

This module imports nothing from ``offload`` itself, so nothing of the card
is loaded uninstrumented before the target.
"""

from __future__ import annotations

import importlib
import shlex
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

import atheris
from atheris.import_hook import instrument_imports

__all__ = ["run", "target_module"]


def target_module(target: str) -> str:
    """The module of a target name (a dotted module path is taken as it is)."""
    return target if "." in target else f"fuzz.targets.{target}"


def run(target: str, args: Sequence[str]) -> NoReturn:
    """Fuzz ``target`` with libFuzzer flags and corpus directories ``args``; never returns."""
    with instrument_imports(include=["offload"]):
        module = importlib.import_module(target_module(target))
    one: Callable[[bytes], None] = module.make()
    # libFuzzer's -merge and -minimize_crash re-run the program through the
    # shell as argv[0] followed by the flags: make argv[0] that command.
    argv = [shlex.join([sys.executable, "-m", "fuzz", "run", target]), *args]
    if not any(a.startswith("-max_len=") for a in args):
        argv.insert(1, f"-max_len={int(module.MAX_LEN)}")
    atheris.Setup(argv, one)
    atheris.Fuzz()
    sys.exit(0)  # atheris.Fuzz exits by itself; this only tells the type checker
