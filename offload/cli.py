"""``offload-blk`` and ``offload-net`` entry points.

How ``offload-blk`` works: it opens the image as a ``SparseFileVolume``, wraps it
in a ``BlkDevice`` and serves that over vhost-user with ``VhostUserServer`` on a
background thread.  The main thread blocks SIGTERM, SIGINT and SIGHUP *before*
any thread starts (so every thread inherits the mask) and waits for them with
``sigwait``: TERM/INT shut the server down (queue workers joined, socket file
removed, exit 0); HUP re-reads the image file's size and, if it grew, resizes
the device online, which sends the front-end a config-change message.  With
``--stats FILE`` the main thread also writes the device's counters (requests,
bytes, errors, a service-time histogram, whether a front-end is connected)
to FILE every second, which is how the host agent exports per-device
metrics without sharing memory with the data path.  Every
start-up failure is one ``offload-blk: error: ...`` line on stderr and a
non-zero exit (2 for bad arguments, 1 for everything else).

``BlkService`` is the same thing for programs and tests::

    with BlkService(socket_path="/run/vol0.sock", image="vol0.img", queues=2) as svc:
        ...  # a front-end may connect; svc.check_resize() after growing the file
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path
from types import TracebackType
from typing import NoReturn

from offload.devices.blk import LATENCY_BOUNDS_NS, BlkDevice
from offload.errors import OffloadError
from offload.storage.volume import SparseFileVolume
from offload.vhost_user.server import VhostUserServer

__all__ = ["BlkService", "blk_main", "net_main"]

log = logging.getLogger("offload.blk")

MAX_QUEUES = 64
MAX_QUEUE_SIZE = 1024
STATS_INTERVAL = 1.0
_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}


class BlkService:
    """One image served as a vhost-user-blk device on one unix socket."""

    def __init__(
        self,
        *,
        socket_path: str | os.PathLike[str],
        image: str | os.PathLike[str],
        read_only: bool = False,
        queues: int = 1,
        serial: str = "",
        queue_size: int = 256,
    ) -> None:
        self.image = Path(image)
        self.volume = SparseFileVolume(self.image, read_only=read_only)
        try:
            self.device = BlkDevice(
                self.volume, num_queues=queues, queue_size=queue_size, serial=serial
            )
            self.server = VhostUserServer(self.device, socket_path)
        except BaseException:
            self.volume.close()
            raise

    def start(self) -> BlkService:
        """Bind the socket (errors surface here) and serve on a background thread."""
        try:
            self.server.start()
        except BaseException:
            self.volume.close()
            raise
        return self

    def close(self) -> None:
        self.server.close()
        self.volume.close()

    def write_stats(self, path: Path) -> None:
        """The device's counters as JSON at *path* (written whole, then renamed)."""
        stats = self.device.stats()
        data = {
            "requests": dict(stats.requests),
            "errors": dict(stats.errors),
            "read_bytes": stats.read_bytes,
            "write_bytes": stats.write_bytes,
            "latency_bounds_ns": list(LATENCY_BOUNDS_NS),
            "latency_buckets": stats.latency_buckets,
            "latency_ns_sum": stats.latency_ns_sum,
            "connected": self.server.connected,
            "size_bytes": self.volume.size,
        }
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(path)

    def check_resize(self) -> bool:
        """Grow the device to the image file's current size; True if it changed."""
        new_size = os.stat(self.image).st_size
        old_size = self.volume.size
        if new_size == old_size:
            return False
        if new_size < old_size:
            log.warning("image shrank from %d to %d bytes: ignored", old_size, new_size)
            return False
        log.info("image grew from %d to %d bytes: resizing online", old_size, new_size)
        if self.volume.read_only:
            # The file grew under us; a read-only volume only needs the new bound.
            self.volume.size = new_size
            self.device.notify_config_changed()
        else:
            self.device.resize(new_size)
        return True

    def __enter__(self) -> BlkService:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive(limit: int) -> type[int]:
    def parse(text: str) -> int:
        try:
            value = int(text, 0)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not 1 <= value <= limit:
            raise argparse.ArgumentTypeError(f"{value} is not in 1..{limit}")
        return value

    return parse  # type: ignore[return-value]


def _queue_size(text: str) -> int:
    value = _positive(MAX_QUEUE_SIZE)(text)
    if value & (value - 1):
        raise argparse.ArgumentTypeError(f"{value} is not a power of two")
    return value


def _blk_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="offload-blk",
        description="Serve a disk image as a vhost-user-blk device (the offload card's back-end).",
        epilog=(
            "Signals: SIGTERM/SIGINT stop the server and remove the socket. "
            "SIGHUP re-reads the image size: grow the image (e.g. `truncate -s 20G IMG`), "
            "then `kill -HUP PID`, and the guest sees the new capacity (online resize)."
        ),
    )
    parser.add_argument("--socket", required=True, metavar="PATH", help="unix socket to listen on")
    parser.add_argument("--image", required=True, metavar="FILE", help="raw image file to serve")
    parser.add_argument("--read-only", action="store_true", help="offer a read-only disk")
    parser.add_argument(
        "--queues", type=_positive(MAX_QUEUES), default=1, metavar="N", help="virtqueues (1)"
    )
    parser.add_argument(
        "--queue-size",
        type=_queue_size,
        default=256,
        metavar="N",
        help="largest ring size a front-end may use, a power of two (256)",
    )
    parser.add_argument("--serial", default="", metavar="ID", help="disk serial (GET_ID)")
    parser.add_argument(
        "--stats",
        metavar="FILE",
        help="write I/O counters as JSON to FILE every second (read by the host agent)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every message")
    return parser


def blk_main(argv: list[str] | None = None) -> int:
    args = _blk_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="offload-blk[%(threadName)s]: %(levelname)s %(message)s",
    )
    image = Path(args.image)
    if not image.is_file():
        return _fail(f"image {image} does not exist or is not a regular file")
    # Block the signals before any thread exists so that only sigwait sees them.
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        try:
            service = BlkService(
                socket_path=args.socket,
                image=image,
                read_only=args.read_only,
                queues=args.queues,
                serial=args.serial,
                queue_size=args.queue_size,
            ).start()
        except (OffloadError, OSError) as exc:
            return _fail(str(exc))
        log.info(
            "serving %s on %s (%d queue(s)%s), pid %d",
            image,
            args.socket,
            args.queues,
            ", read-only" if args.read_only else "",
            os.getpid(),
        )
        stats = Path(args.stats) if args.stats else None
        try:
            while True:
                if stats is not None:
                    service.write_stats(stats)
                    info = signal.sigtimedwait(_SIGNALS, STATS_INTERVAL)
                    if info is None:
                        continue
                    sig = info.si_signo
                else:
                    sig = signal.sigwait(_SIGNALS)
                if sig != signal.SIGHUP:
                    log.info("%s: shutting down", signal.Signals(sig).name)
                    break
                try:
                    service.check_resize()
                except (OffloadError, OSError) as exc:
                    log.error("resize failed: %s", exc)
        finally:
            service.close()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    return 0


def _fail(message: str) -> int:
    print(f"offload-blk: error: {message}", file=sys.stderr)
    return 1


def net_main() -> int:
    print("offload-net: not implemented yet", file=sys.stderr)
    return 2
