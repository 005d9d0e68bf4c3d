"""The TAP device behind one virtio-net NIC: created if missing, opened, removed if ours.

How it works
------------
``Tap.open()`` looks the interface up by name through pyroute2's ``IPRoute``.
If it does not exist it is created (``kind="tuntap"``, ``mode="tap"``, no
packet-info header, multi-queue when more than one queue pair is served) and
the object remembers that it created it; ``close()`` deletes only such an
interface, so a TAP the operator or the agent made survives us.

Each queue pair gets its own fd: ``/dev/net/tun`` opened ``O_NONBLOCK`` and
attached with ``TUNSETIFF`` (``IFF_TAP | IFF_NO_PI``, plus ``IFF_MULTI_QUEUE``
for several queues, in which case the kernel spreads flows across the fds).
That ioctl is the one thing netlink cannot do.  ``IFF_VNET_HDR`` is *not*
set: the device offers no checksum or segmentation offload, so every frame
the kernel hands us is complete and checksummed, and a frame we write needs
no header either.  ``open()`` then sets the MTU (when given) and brings the
link up, both through netlink.

The fds are read and written by the device's queue threads; ``Tap`` only owns
their lifetime.  Errors are ``TapError`` (a ``NetworkError``), with the
interface name and the cause in one line.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
from types import TracebackType
from typing import Any, Final

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from offload.network.errors import NetworkError

__all__ = ["IFF_MULTI_QUEUE", "IFF_NO_PI", "IFF_TAP", "Tap", "TapError"]

TUNSETIFF: Final = 0x400454CA  # _IOW('T', 202, int), x86-64
IFF_TAP: Final = 0x0002
IFF_NO_PI: Final = 0x1000
IFF_MULTI_QUEUE: Final = 0x0100
IFNAMSIZ: Final = 16
_TUN_DEVICE: Final = "/dev/net/tun"


class TapError(NetworkError):
    """A TAP device could not be created, opened, configured or removed."""


class Tap:
    """One TAP interface and one non-blocking fd per queue pair."""

    def __init__(self, name: str, *, queues: int = 1, mtu: int | None = None) -> None:
        if not name or len(name.encode()) >= IFNAMSIZ or "/" in name or name.strip() != name:
            raise TapError(f"{name!r} is not a valid interface name (1-15 bytes)")
        if queues < 1:
            raise TapError(f"tap {name}: {queues} queues")
        self.name = name
        self.queues = queues
        self.mtu = mtu
        self.created = False
        self.fds: list[int] = []

    # -- lifecycle --------------------------------------------------------------

    def open(self) -> Tap:
        """Create the interface if missing, open the fds, set MTU, bring the link up."""
        try:
            with IPRoute() as ipr:
                if not ipr.link_lookup(ifname=self.name):
                    self._create(ipr)
                for _ in range(self.queues):
                    self.fds.append(self._attach())
                index = self._index(ipr)
                settings: dict[str, Any] = {"state": "up"}
                if self.mtu is not None:
                    settings["mtu"] = self.mtu
                ipr.link("set", index=index, **settings)
        except NetlinkError as exc:
            self.close()
            raise TapError(f"tap {self.name}: {exc}") from exc
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Close the fds; delete the interface only if ``open`` created it."""
        fds, self.fds = self.fds, []
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        if not self.created:
            return
        self.created = False
        try:
            with IPRoute() as ipr:
                for index in ipr.link_lookup(ifname=self.name):
                    ipr.link("del", index=index)
        except NetlinkError as exc:
            raise TapError(f"tap {self.name}: cannot delete: {exc}") from exc

    def __enter__(self) -> Tap:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- state ----------------------------------------------------------------

    def is_up(self) -> bool:
        """Whether the interface is administratively up (its link state for the guest)."""
        try:
            with IPRoute() as ipr:
                (link,) = ipr.get_links(self._index(ipr))
        except (NetlinkError, ValueError) as exc:
            raise TapError(f"tap {self.name}: {exc}") from exc
        return bool(link["flags"] & 1)  # IFF_UP

    # -- helpers ----------------------------------------------------------------

    def _create(self, ipr: IPRoute) -> None:
        flags = {"no_pi": True, "multi_queue": self.queues > 1}
        ipr.link("add", ifname=self.name, kind="tuntap", mode="tap", ifr=flags)
        self.created = True

    def _index(self, ipr: IPRoute) -> int:
        found = ipr.link_lookup(ifname=self.name)
        if not found:
            raise TapError(f"tap {self.name} vanished")
        return int(found[0])

    def _attach(self) -> int:
        flags = IFF_TAP | IFF_NO_PI | (IFF_MULTI_QUEUE if self.queues > 1 else 0)
        ifr = struct.pack("16sH22x", self.name.encode(), flags)
        try:
            fd = os.open(_TUN_DEVICE, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise TapError(f"tap {self.name}: cannot open {_TUN_DEVICE}: {exc.strerror}") from exc
        try:
            fcntl.ioctl(fd, TUNSETIFF, ifr)
        except OSError as exc:
            os.close(fd)
            hint = (
                " (an existing TAP with other flags, e.g. multi_queue?)" if exc.errno == 22 else ""
            )
            raise TapError(f"tap {self.name}: TUNSETIFF failed: {exc.strerror}{hint}") from exc
        return fd
