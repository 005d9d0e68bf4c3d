"""The vhost-user back-end server: the listening unix socket and its sessions.

How it works
------------
``VhostUserServer`` listens on a unix socket and serves one front-end at a
time on its serving thread (``serve_forever``): each accepted connection gets
a ``Session`` (``offload.vhost_user.session``), which runs until the front-end
goes away and is then torn down, and the server accepts the next one.  A
reconnecting QEMU replays the whole set-up and the rings resume from the
indices (and inflight region) it sends.

The package is split by concern, as rust-vmm's vhost-user-backend is:

``messages``  request codes, flags, payload layouts, framing (the codec);
``effects``   what handling one message asks the I/O side to do;
``backend``   the sans-I/O state machine, messages in, effects out;
``device``    the interface a device implements (``VhostUserDevice``);
``vring``     a started ring's eventfds and worker thread;
``session``   one connection: carries out effects, owns memory and rings;
``server``    this module: the socket, accept loop, shutdown.

The server wires the device's config-change callback
(``set_config_changed``) to ``notify_config_changed``, which sends
CONFIG_CHANGE_MSG to the connected front-end from a short-lived thread.

``bind`` replaces a stale socket file but refuses one a live process listens
on (``SocketInUse``); ``close`` removes the socket file only if it is still the
one we bound.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import stat
import threading
from pathlib import Path
from types import TracebackType

from offload.vhost_user.device import VhostUserDevice
from offload.vhost_user.errors import SocketInUse, SocketUnavailable
from offload.vhost_user.session import Session, send_config_change_async

__all__ = ["SocketInUse", "SocketUnavailable", "VhostUserDevice", "VhostUserServer"]

log = logging.getLogger(__name__)


class VhostUserServer:
    """Serve ``device`` to one vhost-user front-end at a time on ``socket_path``.

    ``bind()`` creates the listening socket (replacing a stale socket file, refusing
    one a live process listens on); ``serve_forever()`` accepts and serves until
    ``shutdown()``; ``start()`` does both on a background thread.  ``close()``
    shuts down and removes the socket file.  Also a context manager.
    """

    def __init__(self, device: VhostUserDevice, socket_path: str | os.PathLike[str]) -> None:
        self.device = device
        self.socket_path = Path(socket_path)
        self._listener: socket.socket | None = None
        self._session: Session | None = None
        self._lock = threading.Lock()
        self._shutdown = threading.Event()
        self._thread: threading.Thread | None = None
        self._bound_inode: int | None = None
        self.connections = 0
        device.set_config_changed(self._on_config_changed)

    # -- lifecycle ------------------------------------------------------------

    def bind(self) -> None:
        if self._listener is not None:
            return
        path = self.socket_path
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            if path.exists() or path.is_symlink():
                if _is_live_listener(path):
                    raise SocketInUse(f"{path} is in use by a live listener")
                path.unlink()  # a dead back-end's leftover
            listener.bind(str(path))
            listener.listen(1)
        except OSError as exc:
            listener.close()
            raise SocketUnavailable(f"cannot listen on {path}: {exc.strerror or exc}") from exc
        except BaseException:
            listener.close()
            raise
        self._bound_inode = path.stat().st_ino
        self._listener = listener
        log.info("listening on %s", path)

    def serve_forever(self) -> None:
        self.bind()
        listener = self._listener
        assert listener is not None
        while not self._shutdown.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                if self._shutdown.is_set():
                    break
                raise
            conn.setblocking(True)
            session = Session(self.device, conn)
            with self._lock:
                if self._shutdown.is_set():
                    conn.close()
                    break
                self._session = session
                self.connections += 1
            log.info("front-end connected")
            try:
                session.run()
            finally:
                with self._lock:
                    self._session = None
                session.close()

    def start(self) -> VhostUserServer:
        """Bind now and serve on a background thread."""
        self.bind()
        self._thread = threading.Thread(target=self.serve_forever, name="vhost-user", daemon=True)
        self._thread.start()
        return self

    def shutdown(self) -> None:
        """Stop serving: wake the accept and receive calls, then wait for the thread."""
        self._shutdown.set()
        with self._lock:
            session = self._session
            listener = self._listener
        if session is not None:
            with contextlib.suppress(OSError):
                session.sock.shutdown(socket.SHUT_RDWR)
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def close(self) -> None:
        """Shut down and remove the socket file (if it is still ours)."""
        self.shutdown()
        self.device.set_config_changed(None)
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
            with contextlib.suppress(OSError):
                if self.socket_path.stat().st_ino == self._bound_inode:
                    self.socket_path.unlink()

    def __enter__(self) -> VhostUserServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- state --------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._session is not None

    def _on_config_changed(self) -> None:
        self.notify_config_changed()

    def notify_config_changed(self) -> threading.Thread | None:
        """Tell the front-end the config space changed (e.g. online resize).

        Sends from a new thread (returned, for tests to join) since the
        front-end asks GET_CONFIG before it acknowledges.  Returns None when no
        front-end is connected: every session announces the config once when
        its first ring starts, so the next front-end learns of the change.
        """
        session = self._session
        if session is None:
            return None
        return send_config_change_async(session)


def _is_live_listener(path: Path) -> bool:
    if not stat.S_ISSOCK(path.lstat().st_mode):
        raise SocketInUse(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except OSError as exc:
        if exc.errno == errno.ENOTSOCK:
            raise SocketInUse(f"{path} exists and is not a socket") from exc
        return False
    finally:
        probe.close()
    return True
