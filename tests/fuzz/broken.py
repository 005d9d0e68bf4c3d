"""A fuzz target that misbehaves on purpose, to prove the runner reports it.

``BMAAS_FUZZ_BROKEN`` says how: ``crash`` raises on the input ``CRASH-ME``,
``hang`` loops forever on it, ``out-of-region`` writes one byte just before
guest region A (inside the card's own mapping, where only canaries live).
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable
from typing import Final

from fuzz.guest import LAYOUT, FuzzRam

MAX_LEN: Final = 64
TRIGGER: Final = b"CRASH-ME"


def make() -> Callable[[bytes], None]:
    mode = os.environ.get("BMAAS_FUZZ_BROKEN", "crash")
    ram = FuzzRam()

    def one(data: bytes) -> None:
        if data != TRIGGER:
            return
        if mode == "crash":
            raise RuntimeError("the target crashed on purpose")
        if mode == "hang":
            while True:
                pass
        region = ram.mem.view(LAYOUT[0].gpa, 1)
        ctypes.c_char.from_address(
            ctypes.addressof(ctypes.c_char.from_buffer(region)) - 1
        ).value = b"X"
        ram.check_canaries()

    return one


def seeds() -> dict[str, bytes]:
    return {}
