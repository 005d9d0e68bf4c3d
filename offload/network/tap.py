"""The TAP device behind one virtio-net NIC: created if missing, opened, removed if ours.

How it works
------------
``Tap.open()`` looks the interface up by name through pyroute2's ``IPRoute``.
If it does not exist it is created (``kind="tuntap"``, ``mode="tap"``, no
packet-info header, multi-queue when more than one queue pair is served) and
the object remembers that it created it; ``close()`` deletes only such an
interface, so a TAP the operator or the agent made survives us.

Each queue pair gets its own fd: ``/dev/net/tun`` opened ``O_NONBLOCK`` and
attached with ``TUNSETIFF`` (``IFF_TAP | IFF_NO_PI | IFF_VNET_HDR``, plus
``IFF_MULTI_QUEUE`` for several queues, in which case the kernel spreads
flows across the fds).  That ioctl is the one thing netlink cannot do.
Every frame read or written then starts with a virtio-net header; its size
is set to the 12 bytes of ``virtio_net_hdr_v1`` with ``TUNSETVNETHDRSZ``
(the kernel reads and writes the first 10, the ``num_buffers`` field is
ours).  Until ``set_offloads`` says otherwise (``TUNSETOFFLOAD``: partial
checksums, TSO for IPv4 and IPv6) the kernel hands us only complete,
checksummed frames; what we write may ask for checksum and segmentation
offload at any time, and the kernel validates that header itself.  ``open()``
then sets the MTU (when given) and brings the link up, both through netlink.

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

__all__ = [
    "IFF_MULTI_QUEUE",
    "IFF_NO_PI",
    "IFF_TAP",
    "IFF_VNET_HDR",
    "TUN_F_CSUM",
    "TUN_F_TSO4",
    "TUN_F_TSO6",
    "VNET_HDR_SIZE",
    "Tap",
    "TapError",
    "offload_flags",
]

TUNSETIFF: Final = 0x400454CA  # _IOW('T', 202, int), x86-64
TUNSETOFFLOAD: Final = 0x400454D0  # _IOW('T', 208, unsigned int)
TUNSETVNETHDRSZ: Final = 0x400454D8  # _IOW('T', 216, int)
IFF_TAP: Final = 0x0002
IFF_NO_PI: Final = 0x1000
IFF_VNET_HDR: Final = 0x4000
IFF_MULTI_QUEUE: Final = 0x0100
TUN_F_CSUM: Final = 0x01
TUN_F_TSO4: Final = 0x02
TUN_F_TSO6: Final = 0x04
VNET_HDR_SIZE: Final = 12  # struct virtio_net_hdr_v1
IFNAMSIZ: Final = 16
_TUN_DEVICE: Final = "/dev/net/tun"


class TapError(NetworkError):
    """A TAP device could not be created, opened, configured or removed."""


def offload_flags(*, csum: bool, tso4: bool, tso6: bool) -> int:
    """``TUNSETOFFLOAD`` flags; the kernel ignores TSO without partial checksums."""
    if not csum:
        return 0
    return TUN_F_CSUM | (TUN_F_TSO4 if tso4 else 0) | (TUN_F_TSO6 if tso6 else 0)


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
        self.offload_flags = 0  # the last TUNSETOFFLOAD

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

    def set_offloads(self, *, csum: bool, tso4: bool, tso6: bool) -> None:
        """Tell the kernel which offloaded frames (partial checksum, TSO) we may read."""
        flags = offload_flags(csum=csum, tso4=tso4, tso6=tso6)
        for fd in self.fds:
            try:
                fcntl.ioctl(fd, TUNSETOFFLOAD, flags)
            except OSError as exc:
                raise TapError(f"tap {self.name}: TUNSETOFFLOAD failed: {exc.strerror}") from exc
        self.offload_flags = flags

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
        flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | (IFF_MULTI_QUEUE if self.queues > 1 else 0)
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
        try:
            # The header size and the offloads belong to the interface, not
            # the fd: a TAP we did not create may come with old settings.
            fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", VNET_HDR_SIZE))
            fcntl.ioctl(fd, TUNSETOFFLOAD, 0)
        except OSError as exc:
            os.close(fd)
            raise TapError(f"tap {self.name}: vnet header setup failed: {exc.strerror}") from exc
        return fd
