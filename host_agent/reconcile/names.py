"""Names the agent derives from AIP names: file names, device ids, TAPs.

Unix socket paths have 108 bytes and interface names 15 characters, so an
AIP name (``instances/web-1``) becomes a short hash.  The same volume or NIC
always gets the same id, which is how a restarted agent finds its sockets,
QEMU's devices and its TAPs again.
"""

from __future__ import annotations

import hashlib


def short_id(name: str) -> str:
    """A short, stable file-name-safe id for an AIP name (sockets have 108 bytes)."""
    return hashlib.sha256(name.encode()).hexdigest()[:12]


def tap_name(nic: str) -> str:
    """The TAP of a NIC on its host (15 characters at most)."""
    return "bmt" + short_id(nic)[:10]


def disk_id(volume: str, *, boot: bool = False) -> str:
    """The QEMU device id (and vhost-user serial) of a disk."""
    return ("b" if boot else "v") + short_id(volume)[:10]


def nic_id(nic: str) -> str:
    """The QEMU device id of a NIC."""
    return "n" + short_id(nic)[:10]


def socket_prefix(instance: str) -> str:
    """What every back-end socket of *instance* starts with in ``run_dir``."""
    return short_id(instance)[:8] + "-"
