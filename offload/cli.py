"""``offload-blk`` and ``offload-net`` entry points.

How ``offload-blk`` works: it opens the image as a ``FileEngine`` over a
``SparseFileVolume`` (``--image FILE``: non-blocking, one engine for every
ring; ``--engine sync`` keeps the blocking one) or an ``RbdVolume``
(``--rbd POOL/IMAGE --ceph-conf FILE [--ceph-id NAME]``: librbd,
asynchronous, exclusively locked), wraps it
in a ``BlkDevice`` and serves that over vhost-user with ``VhostUserServer`` on a
background thread.  The main thread blocks SIGTERM, SIGINT and SIGHUP *before*
any thread starts (so every thread inherits the mask) and waits for them with
``sigwait``: TERM/INT shut the server down (queue workers joined, socket file
removed, exit 0); HUP re-reads the image's size (the file's, or the RBD
image's) and, if it grew, resizes the device online, which sends the
front-end a config-change message, and re-reads the QoS limits
(``offload.storage.limits``: ``--max-iops``/``--max-mbps``, replaced by
``--limits FILE`` when it exists).  ``--poll-us N`` turns on polling mode
(``BlkDevice.poll_ns``).  With
``--stats FILE`` the main thread also writes the device's counters (requests,
bytes, errors, a service-time histogram, whether a front-end is connected)
to FILE every second, which is how the host agent exports per-device
metrics without sharing memory with the data path.  Every
start-up failure is one ``offload-blk: error: ...`` line on stderr and a
non-zero exit (2 for bad arguments, 1 for everything else).

``BlkService`` is the same thing for programs and tests::

    with BlkService(socket_path="/run/vol0.sock", image="vol0.img", queues=2) as svc:
        ...  # a front-end may connect; svc.check_resize() after growing the file

Both CLIs share one main loop, ``_serve``: block the signals, start the
service, wait for signals (with a periodic ``tick`` for the stats file and
timers), ``hangup`` on SIGHUP, close on TERM/INT.  Each device brings its
start, tick and hangup.

How ``offload-net`` works, with the same structure: ``NetService`` opens the
TAP (``offload.network.tap``: created if missing, one fd per queue pair, MTU
set, link up), builds the NIC hook, wraps both in a ``NetDevice`` and serves
it with ``VhostUserServer``.  The hook is ``NicServices`` (DHCP, ARP for the
gateway and metadata address, metadata HTTP, anti-spoofing) when ``--ip`` is
given, built from ``--ip``/``--ipv6``/``--gateway``/``--metadata``/
``--metadata-tokens``/``--mtu``; without an
address the NIC is a plain wire (``ForwardAll``).  The main thread waits in
``sigtimedwait`` with a one-second timeout and calls the services' ``poll``
(metadata retransmissions) on each timeout; SIGHUP copies the TAP's up/down
state into the link status; TERM/INT close the server, then the TAP, which is
deleted only if this process created it (the loop is ``_serve``, as for
``offload-blk``).  Errors are one
``offload-net: error: ...`` line, exit 2 for bad arguments (a NIC config the
services refuse and a bad ``--metadata`` file included: ``metadata_file``
refuses unknown keys and wrong types), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv6Interface
from pathlib import Path
from types import TracebackType
from typing import NoReturn, TypeVar

from offload.devices.blk import LATENCY_BOUNDS_NS, BlkDevice
from offload.devices.net import NetDevice
from offload.errors import OffloadError
from offload.network.directory_file import load_directory
from offload.network.errors import InvalidNicConfig
from offload.network.hook import ForwardAll, NicHook
from offload.network.metadata import InstanceMetadata
from offload.network.metadata_file import load_metadata
from offload.network.services import MetadataTokens, NicConfig, NicServices
from offload.network.tap import Tap
from offload.storage.file_engine import FileEngine
from offload.storage.limits import UNLIMITED, Limits, read_limits
from offload.storage.rbd import RbdVolume, parse_spec
from offload.storage.volume import SparseFileVolume, Volume
from offload.vhost_user.server import VhostUserServer

__all__ = ["BlkService", "NetService", "blk_main", "net_main"]

log = logging.getLogger("offload.blk")

MAX_QUEUES = 64
MAX_QUEUE_SIZE = 1024
STATS_INTERVAL = 1.0
_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
ENGINE_ASYNC = "async"
ENGINE_SYNC = "sync"


@dataclass(frozen=True, slots=True)
class RbdTarget:
    """An RBD image to serve: ``pool/image`` of the cluster ``conf`` describes."""

    pool: str
    image: str
    conf: Path
    client_id: str = "admin"
    connect_timeout: float = 10.0


class BlkService:
    """One image (a file, or an RBD image) served as a vhost-user-blk device on one unix socket."""

    def __init__(
        self,
        *,
        socket_path: str | os.PathLike[str],
        image: str | os.PathLike[str] | None = None,
        rbd: RbdTarget | None = None,
        read_only: bool = False,
        queues: int = 1,
        serial: str = "",
        queue_size: int = 256,
        engine: str = ENGINE_ASYNC,
        poll_us: int = 0,
        limits: Limits = UNLIMITED,
        limits_file: Path | None = None,
    ) -> None:
        if (image is None) == (rbd is None):
            raise ValueError("give exactly one of image and rbd")
        self.image = None if image is None else Path(image)
        self.volume: Volume
        if rbd is not None:
            self.volume = RbdVolume(
                pool=rbd.pool,
                image=rbd.image,
                conf=rbd.conf,
                client_id=rbd.client_id,
                read_only=read_only,
                connect_timeout=rbd.connect_timeout,
            )
        else:
            assert self.image is not None
            file = SparseFileVolume(self.image, read_only=read_only)
            self.volume = file if engine == ENGINE_SYNC else FileEngine(file)
        self.limits_file = limits_file
        self.flag_limits = limits
        self.limits = UNLIMITED  # in force (the device starts without a limiter)
        self.limits_errors = 0
        try:
            self.device = BlkDevice(
                self.volume,
                num_queues=queues,
                queue_size=queue_size,
                serial=serial,
                poll_us=poll_us,
            )
            self.reload_limits()
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
            "max_iops": self.limits.max_iops,
            "max_mbps": self.limits.max_mbps,
            "limits_errors": self.limits_errors,
            "throttled_total": 0 if self.device.qos is None else self.device.qos.throttled_total,
        }
        if isinstance(self.volume, RbdVolume):
            data["rbd_client_address"] = self.volume.client_address
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(path)

    def check_resize(self) -> bool:
        """Grow the device to the image file's current size; True if it changed."""
        if isinstance(self.volume, RbdVolume):
            new_size = self.volume.image_size()
        else:
            assert self.image is not None
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

    def reload_limits(self) -> Limits:
        """Apply the limits file (if there is one) or the flags' limits; returns them.

        Only a change swaps the limiter (a new one starts with full buckets);
        the device picks it up at its next drain.
        """
        limits = self.flag_limits
        if self.limits_file is not None and self.limits_file.exists():
            limits = read_limits(self.limits_file)
        if limits != self.limits:
            self.device.qos = limits.limiter()
            log.info("QoS limits now %s", limits)
            self.limits = limits
        return limits

    def hangup(self) -> None:
        """SIGHUP: re-read the image's size and the QoS limits."""
        try:
            self.check_resize()
        except (OffloadError, OSError) as exc:
            log.error("resize failed: %s", exc)
        try:
            self.reload_limits()
        except (OffloadError, OSError) as exc:
            self.limits_errors += 1
            log.error("limits not changed: %s", exc)

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


def _limit(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < 1 << 32:
        raise argparse.ArgumentTypeError(f"{value} is not in 0..{(1 << 32) - 1}")
    return value


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
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", metavar="FILE", help="raw image file to serve")
    source.add_argument(
        "--rbd",
        metavar="POOL/IMAGE",
        help="Ceph RBD image to serve (librbd; needs --ceph-conf; locked exclusively)",
    )
    parser.add_argument("--ceph-conf", metavar="FILE", help="ceph.conf of the cluster (--rbd)")
    parser.add_argument(
        "--ceph-id", default="admin", metavar="NAME", help="Ceph client name (admin)"
    )
    parser.add_argument(
        "--ceph-timeout",
        type=_positive(3600),
        default=10,
        metavar="SECONDS",
        help="give up reaching the Ceph cluster after this long (10)",
    )
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
        "--max-iops", type=_limit, default=0, metavar="N", help="IOPS limit (0: none)"
    )
    parser.add_argument(
        "--max-mbps", type=_limit, default=0, metavar="N", help="MB/s limit, 10^6 bytes (0: none)"
    )
    parser.add_argument(
        "--limits",
        metavar="FILE",
        help='QoS limits as JSON {"max_iops": N, "max_mbps": N}, read at start and on SIGHUP; '
        "when FILE exists it replaces --max-iops/--max-mbps",
    )
    parser.add_argument(
        "--engine",
        choices=(ENGINE_ASYNC, ENGINE_SYNC),
        default=ENGINE_ASYNC,
        help="file volumes: non-blocking engine with a completion pool (async), or the "
        "ring's thread blocks in each request (sync)",
    )
    parser.add_argument(
        "--poll-us",
        type=_limit,
        default=0,
        metavar="N",
        help="polling mode for dedicated cores: spin on the rings up to N us after the last "
        "request before sleeping on the kick (0: event-driven)",
    )
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
    image: Path | None = None
    rbd: RbdTarget | None = None
    if args.rbd is not None:
        try:
            pool, name = parse_spec(args.rbd)
        except ValueError as exc:
            return _fail("offload-blk", f"--rbd: {exc}")
        if not args.ceph_conf:
            return _fail("offload-blk", "--rbd needs --ceph-conf FILE")
        if not Path(args.ceph_conf).is_file():
            return _fail("offload-blk", f"ceph config {args.ceph_conf} does not exist")
        rbd = RbdTarget(pool, name, Path(args.ceph_conf), args.ceph_id, float(args.ceph_timeout))
    else:
        if args.ceph_conf:
            return _fail("offload-blk", "--ceph-conf only goes with --rbd")
        image = Path(args.image)
        if not image.is_file():
            return _fail("offload-blk", f"image {image} does not exist or is not a regular file")
    if args.rbd is not None and args.engine == ENGINE_SYNC:
        return _fail("offload-blk", "--engine sync is for --image only")
    limits_file = Path(args.limits) if args.limits else None
    limits = Limits(args.max_iops, args.max_mbps)

    def start() -> BlkService:
        service = BlkService(
            socket_path=args.socket,
            image=image,
            rbd=rbd,
            read_only=args.read_only,
            queues=args.queues,
            serial=args.serial,
            queue_size=args.queue_size,
            engine=args.engine,
            poll_us=args.poll_us,
            limits=limits,
            limits_file=limits_file,
        ).start()
        log.info(
            "serving %s on %s (%d queue(s)%s, %s engine%s, %s), pid %d",
            image if rbd is None else f"rbd:{rbd.pool}/{rbd.image}",
            args.socket,
            args.queues,
            ", read-only" if args.read_only else "",
            args.engine if rbd is None else "rbd",
            f", polling {args.poll_us} us" if args.poll_us else "",
            service.limits,
            os.getpid(),
        )
        return service

    stats = Path(args.stats) if args.stats else None

    def tick(service: BlkService) -> None:
        if stats is not None:
            service.write_stats(stats)

    return _serve(
        "offload-blk",
        start,
        tick=tick if stats is not None else None,
        hangup=BlkService.hangup,
        close=BlkService.close,
    )


_S = TypeVar("_S")


def _serve(
    prog: str,
    start: Callable[[], _S],
    *,
    tick: Callable[[_S], None] | None,
    hangup: Callable[[_S], None],
    close: Callable[[_S], None],
) -> int:
    """The main loop of both CLIs: start the service, wait for signals, close it.

    The signals are blocked before ``start`` makes any thread (every thread
    inherits the mask), so only this loop sees them.  With a ``tick`` (stats
    files, the NIC services' timers) the loop calls it, then waits up to
    ``STATS_INTERVAL`` in ``sigtimedwait``; without one it sleeps in
    ``sigwait``.  SIGHUP calls ``hangup``; TERM/INT end the loop; anything
    else (a tracer attaching wakes the wait) is ignored.
    """
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        try:
            service = start()
        except (OffloadError, OSError) as exc:
            return _fail(prog, str(exc))
        try:
            while True:
                if tick is not None:
                    tick(service)
                    info = signal.sigtimedwait(_SIGNALS, STATS_INTERVAL)
                    sig = None if info is None else info.si_signo
                else:
                    sig = signal.sigwait(_SIGNALS)
                if sig is None or sig not in _SIGNALS:
                    continue
                if sig != signal.SIGHUP:
                    log.info("%s: shutting down", signal.Signals(sig).name)
                    break
                hangup(service)
        finally:
            close(service)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    return 0


def _fail(prog: str, message: str) -> int:
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 1


# --------------------------------------------------------------------------- offload-net


class NetService:
    """One NIC: a TAP served as a vhost-user virtio-net device on one unix socket."""

    def __init__(
        self,
        *,
        socket_path: str | os.PathLike[str],
        tap: str,
        mac: str,
        queues: int = 1,
        mtu: int = 1500,
        hook: NicHook | None = None,
        queue_size: int = 1024,
    ) -> None:
        self.tap = Tap(tap, queues=queues, mtu=mtu)
        self.mac = mac
        self.mtu = mtu
        self.queue_size = queue_size
        self.hook: NicHook = hook if hook is not None else ForwardAll()
        self.socket_path = socket_path
        self.device: NetDevice | None = None
        self.server: VhostUserServer | None = None

    def start(self) -> NetService:
        """Open the TAP, bind the socket (errors surface here), serve in the background."""
        try:
            self.tap.open()
            self.device = NetDevice(
                mac=bytes.fromhex(self.mac.replace(":", "")),
                tap_fds=self.tap.fds,
                mtu=self.mtu,
                hook=self.hook,
                queue_size=self.queue_size,
                tap_offloads=self.tap.set_offloads,
            )
            self.server = VhostUserServer(self.device, self.socket_path).start()
        except BaseException:
            self.close()
            raise
        return self

    def refresh_link(self) -> bool:
        """Copy the TAP's up/down state into the link status; returns it."""
        up = self.tap.is_up()
        if self.device is not None:
            self.device.set_link(up)
        return up

    def write_stats(self, path: Path, services: NicServices | None) -> None:
        """Frame counters (TX: guest to TAP, RX: TAP to guest) and the card
        services' verdicts as JSON at *path* (written whole, then renamed)."""
        if self.device is None or self.server is None:
            return  # not started
        tx, rx = self.device.stats(rx=False), self.device.stats(rx=True)
        data: dict[str, object] = {
            "tx_frames": tx.frames,
            "tx_bytes": tx.bytes,
            "rx_frames": rx.frames,
            "rx_bytes": rx.bytes,
            "dropped": dict(tx.dropped + rx.dropped),
            "errors": dict(tx.errors + rx.errors),
            "connected": self.server.connected,
        }
        if services is not None:
            data["services"] = {
                "forwarded": services.forwarded,
                "consumed": services.consumed,
                "dropped_spoofed": services.dropped_spoofed,
                "dropped_malformed": services.dropped_malformed,
                "dropped_policy": services.dropped_policy,
                "replies": services.replies,
                "routed": services.routed,
            }
            data["drops"] = dict(services.drops)  # by reason
            data["metadata"] = {
                "tokens_issued": services.metadata.tokens.issued,
                "unauthorized": services.metadata.unauthorized,
            }
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(path)

    def close(self) -> None:
        """Stop serving, release the device, close (and delete, if ours) the TAP."""
        if self.server is not None:
            self.server.close()
            self.server = None
        if self.device is not None:
            self.device.close()
            self.device = None
        self.tap.close()

    def __enter__(self) -> NetService:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _mac(text: str) -> str:
    parts = text.split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise argparse.ArgumentTypeError(f"{text!r} is not a MAC address (aa:bb:cc:dd:ee:ff)")
    try:
        first = int(parts[0], 16)
        for p in parts[1:]:
            int(p, 16)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a MAC address") from None
    if first & 1:
        raise argparse.ArgumentTypeError(f"{text} is a multicast MAC")
    return text.lower()


def _typed(parse: Callable[[str], object], what: str) -> Callable[[str], object]:
    def convert(text: str) -> object:
        try:
            return parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None

    return convert


def _net_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="offload-net",
        description="Serve a TAP as a vhost-user virtio-net NIC (the offload card's back-end).",
        epilog=(
            "The TAP is created if missing and deleted on exit only if this process created it. "
            "Signals: SIGTERM/SIGINT stop; SIGHUP copies the TAP up/down state to the link status."
        ),
    )
    parser.add_argument("--socket", required=True, metavar="PATH", help="unix socket to listen on")
    parser.add_argument("--tap", required=True, metavar="NAME", help="TAP interface (1-15 chars)")
    parser.add_argument("--mac", required=True, type=_mac, metavar="MAC", help="the guest's MAC")
    parser.add_argument(
        "--ip",
        type=_typed(IPv4Interface, "an IPv4 address/prefix"),
        metavar="ADDR/PREFIX",
        help="the guest's address: enables DHCP, ARP, metadata and anti-spoofing on the card",
    )
    parser.add_argument(
        "--gateway", type=_typed(IPv4Address, "an IPv4 address"), metavar="IP", help="default route"
    )
    parser.add_argument(
        "--ipv6",
        type=_typed(IPv6Interface, "an IPv6 address/prefix"),
        action="append",
        default=[],
        metavar="ADDR/PREFIX",
        help="an IPv6 address of the guest (repeatable; needs --ip); without one the card "
        "drops all the guest's IPv6",
    )
    parser.add_argument("--metadata", metavar="FILE.json", help="instance metadata (needs --ip)")
    parser.add_argument(
        "--vpc-directory",
        metavar="FILE.json",
        help="the VPC's interfaces (needs --ip): frames sent to the gateway are routed to "
        "them; re-read on SIGHUP",
    )
    parser.add_argument(
        "--metadata-tokens",
        choices=[t.value for t in MetadataTokens],
        default=MetadataTokens.REQUIRED.value,
        help="whether metadata GETs need an IMDSv2 session token (required)",
    )
    parser.add_argument(
        "--netns",
        metavar="NAME",
        help="enter this network namespace first: the TAP is created (or found) there",
    )
    parser.add_argument(
        "--stats",
        metavar="FILE",
        help="write frame counters as JSON to FILE every second (read by the host agent)",
    )
    parser.add_argument(
        "--queues", type=_positive(MAX_QUEUES // 2), default=1, metavar="N", help="queue pairs (1)"
    )
    parser.add_argument(
        "--mtu", type=_positive(65517), default=1500, metavar="N", help="MTU of the TAP (1500)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every message")
    return parser


def _net_hook(args: argparse.Namespace) -> NicServices | None:
    """The card services for ``--ip`` (None without an address)."""
    if args.ip is None:
        return None
    if args.metadata is not None:
        metadata = load_metadata(args.metadata, mac=args.mac, ip=args.ip)
    else:
        instance_id = "i-" + args.mac.replace(":", "")
        metadata = InstanceMetadata(
            instance_id=instance_id, hostname=instance_id, local_ipv4=str(args.ip.ip), mac=args.mac
        )
    config = NicConfig(
        mac=args.mac,
        ip=args.ip,
        gateway=args.gateway,
        metadata=metadata,
        # the card answers the VPC's names on the gateway: DHCP says so (option 6)
        dns=(args.gateway,) if args.vpc_directory is not None and args.gateway else (),
        hostname=metadata.hostname,
        mtu=args.mtu,
        metadata_tokens=MetadataTokens(args.metadata_tokens),
        ipv6=tuple(args.ipv6),
    )
    services = NicServices(config)
    if args.vpc_directory is not None:
        services.set_directory(load_directory(args.vpc_directory))
    return services


def net_main(argv: list[str] | None = None) -> int:
    parser = _net_parser()
    args = parser.parse_args(argv)
    if args.ip is None and (
        args.gateway is not None
        or args.metadata is not None
        or args.ipv6
        or args.vpc_directory is not None
    ):
        parser.error("--gateway, --ipv6, --metadata and --vpc-directory need --ip")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="offload-net[%(threadName)s]: %(levelname)s %(message)s",
    )
    logging.getLogger("pyroute2").setLevel(logging.WARNING)  # its DEBUG is per message
    if args.netns:
        # before any thread exists: a namespace is a per-thread property
        from pyroute2.netns import setns

        try:
            setns(args.netns, flags=0)  # never create it
        except OSError as exc:
            return _fail("offload-net", f"network namespace {args.netns}: {exc.strerror or exc}")
    try:
        services = _net_hook(args)
    except InvalidNicConfig as exc:  # the arguments or the metadata file: nothing started
        parser.error(str(exc))
    except (OffloadError, ValueError) as exc:
        return _fail("offload-net", str(exc))

    def start() -> NetService:
        service = NetService(
            socket_path=args.socket,
            tap=args.tap,
            mac=args.mac,
            queues=args.queues,
            mtu=args.mtu,
            hook=services,
        ).start()
        log.info(
            "serving TAP %s%s on %s (%d queue pair(s), mac %s, %s), pid %d",
            args.tap,
            " (created)" if service.tap.created else "",
            args.socket,
            args.queues,
            args.mac,
            f"services for {args.ip}" if services is not None else "no card services",
            os.getpid(),
        )
        return service

    stats = Path(args.stats) if args.stats else None

    def tick(service: NetService) -> None:
        if services is not None:
            services.poll()  # metadata retransmissions
        if stats is not None:
            service.write_stats(stats, services)

    def hangup(service: NetService) -> None:
        try:
            log.info("link %s", "up" if service.refresh_link() else "down")
        except OffloadError as exc:
            log.error("link refresh failed: %s", exc)
        if services is not None and args.vpc_directory is not None:
            try:
                services.set_directory(load_directory(args.vpc_directory))
            except InvalidNicConfig as exc:  # keep routing with the last good one
                log.error("%s", exc)
            else:
                log.info("vpc directory %s reloaded", args.vpc_directory)

    return _serve("offload-net", start, tick=tick, hangup=hangup, close=NetService.close)
