"""The image cache: fetch a boot image once, verify it, keep it sparse.

``ImageCache.fetch(uri, checksum=...)`` returns the path of a local copy.
An entry is keyed by ``(uri, checksum)`` (a hash of both names the file
``<key>.img``), and an entry exists only once it is complete: the bytes go
to a ``.partial-*`` temp file in the cache directory, are hashed while they
stream, checked for a boot signature, fsynced and then renamed over the
final name (the directory is fsynced too).  So a present entry is reused
without touching the source, and a crash or an error leaves no entry.
Concurrent fetches of one key share a per-key ``asyncio.Lock``: the second
caller waits and then finds the entry; locks are dropped when unused.

Sources, by scheme: ``file:///abs/path`` and plain absolute paths are read
through their data extents (``extents.data_extents``), so the source's holes
are never read and stay holes in the cache; ``http://``/``https://`` go
through ``urllib`` (``user:password@`` in the URI becomes Basic auth;
proxies come from the environment) with a socket timeout that bounds the
connect and every read (not the whole transfer: a large image on a slow
link is not an error).  Both stream in ``extents.CHUNK`` pieces through one buffer, and
zero blocks are skipped on write (``extents.write_sparse``), so downloads
are sparse too.  Anything else is ``UnsupportedImageSource``.

The cache is bounded (``max_bytes``, allocated bytes, holes excluded):
every ``fetch`` marks its entry used (its mtime), and once the entry is in
place the least recently used other entries are deleted until the cache
fits.  An entry being fetched or evicted (its key lock is held) or pinned by
``use`` (a clone from it is running) is never deleted, and the entry just
fetched stays even if it alone is over the bound.  Clones are independent copies, so
deleting an entry never touches a disk made from it; the next instance from
that image fetches it again.

The blocking part (``_Fetch.run``) runs in ``asyncio.to_thread``; if the
awaiting task is cancelled, a flag makes the thread stop at its next chunk
and delete its temp file.  Errors are the ``ImageError`` branch of
``errors``; URIs in messages lose credentials and query strings.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import http.client
import os
import re
import stat
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from host_agent.storage.errors import (
    ImageChecksumMismatch,
    ImageError,
    ImageFetchFailed,
    ImageNotBootable,
    ImageNotFound,
    InvalidChecksum,
    UnsupportedImageSource,
    one_line,
)
from host_agent.storage.extents import CHUNK, data_extents, fsync_dir, read_full, write_sparse

__all__ = ["ImageCache", "display_uri", "is_bootable_header", "parse_checksum"]

DEFAULT_TIMEOUT_S = 30.0
_CHECKSUM = re.compile(r"sha256:([0-9a-fA-F]{64})")
_PARTIAL = ".partial-"
_SUFFIX = ".img"
_ZERO_CHUNK = bytes(CHUNK)
_URI_SHOWN = 160
_HEADER = 520  # MBR (512) + the GPT signature at LBA 1


def parse_checksum(checksum: str) -> str:
    """The lowercase hex digest in ``"sha256:<64 hex>"``, or ``""`` for no checksum."""
    if checksum == "":
        return ""
    m = _CHECKSUM.fullmatch(checksum)
    if m is None:
        raise InvalidChecksum(
            f"checksum {checksum[:80]!r} is not of the form sha256:<64 hex digits>"
        )
    return m.group(1).lower()


def display_uri(uri: str) -> str:
    """*uri* as a message may show it: no user:password, no query, bounded length."""
    try:
        parts = urllib.parse.urlsplit(uri)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return one_line(uri, _URI_SHOWN)
    if parts.scheme in ("http", "https") and host:
        netloc = f"[{host}]" if ":" in host else host
        if port is not None:
            netloc += f":{port}"
        query = "?…" if parts.query else ""
        uri = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", "")) + query
    return one_line(uri, _URI_SHOWN)


def is_bootable_header(head: bytes) -> bool:
    """Whether the first bytes of a disk carry an MBR boot signature or a GPT header."""
    mbr = len(head) >= 512 and head[510:512] == b"\x55\xaa"
    gpt = len(head) >= 520 and head[512:520] == b"EFI PART"
    return mbr or gpt


def _source(uri: str) -> tuple[str, str]:
    """``("file", path)`` or ``("http", url)``; raises ``UnsupportedImageSource``."""
    shown = display_uri(uri)
    if uri.startswith("/"):
        return "file", uri
    try:
        parts = urllib.parse.urlsplit(uri)
    except ValueError as exc:
        raise UnsupportedImageSource(f"image URI {shown} is malformed", uri=uri) from exc
    scheme = parts.scheme.lower()
    if scheme in ("http", "https") and parts.hostname:
        return "http", uri
    if scheme == "file" and parts.netloc in ("", "localhost") and parts.path.startswith("/"):
        return "file", urllib.parse.unquote(parts.path)
    raise UnsupportedImageSource(
        f"image source {shown} is not supported (use http://, https://, file:///path "
        "or an absolute path)",
        uri=uri,
    )


def _touch(path: Path) -> bool:
    """Mark an entry used now; False if there is none."""
    try:
        os.utime(path)
    except FileNotFoundError:
        return False
    return True


def _cause(exc: BaseException) -> str:
    """A short human cause for a network or file error."""
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        reason = exc.reason
        if isinstance(reason, BaseException):
            return _cause(reason)
        return str(reason)
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower() if exc.strerror[:1].isupper() else exc.strerror
    if isinstance(exc, http.client.IncompleteRead):
        return "connection closed before the end of the body"
    return str(exc) or type(exc).__name__


def _request(uri: str) -> urllib.request.Request:
    """A GET for *uri*; ``user:password@`` becomes a Basic ``Authorization`` header."""
    headers = {"User-Agent": "bmaas-host-agent"}
    parts = urllib.parse.urlsplit(uri)
    if parts.username is not None:
        userinfo = f"{urllib.parse.unquote(parts.username)}:"
        userinfo += urllib.parse.unquote(parts.password or "")
        headers["Authorization"] = "Basic " + base64.b64encode(userinfo.encode()).decode()
        netloc = parts.netloc.rpartition("@")[2]
        uri = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return urllib.request.Request(uri, headers=headers)


class _Fetch:
    """One blocking fetch of *uri* into a temp file, renamed to *final* on success."""

    def __init__(
        self, uri: str, digest: str, final: Path, *, timeout: float, stop: threading.Event
    ) -> None:
        self.uri = uri
        self.shown = display_uri(uri)
        self.digest = digest
        self.final = final
        self.timeout = timeout
        self.stop = stop
        self.hasher = hashlib.sha256() if digest else None
        self.buf = bytearray(CHUNK)

    def run(self) -> None:
        kind, location = _source(self.uri)
        fd, tmp = tempfile.mkstemp(dir=self.final.parent, prefix=_PARTIAL, suffix=_SUFFIX)
        try:
            size = self._from_file(location, fd) if kind == "file" else self._from_http(fd)
            self._check(fd, size)
            try:
                os.ftruncate(fd, size)
                os.fsync(fd)
                os.close(fd)
                fd = -1
                os.replace(tmp, self.final)
                fsync_dir(self.final.parent)
            except OSError as exc:
                raise self.local_error(exc) from exc
        finally:
            if fd >= 0:
                os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    # ---------------------------------------------------------------- sources

    def _from_file(self, path: str, fd: int) -> int:
        try:
            src = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            raise ImageNotFound(f"image {self.shown} not found", uri=self.uri) from exc
        except OSError as exc:
            raise ImageFetchFailed(
                f"cannot read image {self.shown}: {_cause(exc)}", uri=self.uri
            ) from exc
        try:
            st = os.fstat(src)
            if not stat.S_ISREG(st.st_mode):
                raise ImageFetchFailed(f"image {self.shown} is not a regular file", uri=self.uri)
            pos = 0
            for start, length in data_extents(src, 0, st.st_size):
                self._hash_zeros(start - pos)
                for off in range(start, start + length, CHUNK):
                    n = read_full(src, self.buf, min(CHUNK, start + length - off), off)
                    self._take(fd, n, off)
                pos = start + length
            self._hash_zeros(st.st_size - pos)
            return st.st_size
        except OSError as exc:
            raise ImageFetchFailed(
                f"cannot read image {self.shown}: {_cause(exc)}", uri=self.uri
            ) from exc
        finally:
            os.close(src)

    def _from_http(self, fd: int) -> int:
        request = _request(self.uri)
        try:
            response = urllib.request.build_opener().open(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 404:
                raise ImageNotFound(
                    f"image {self.shown} not found (HTTP 404)", uri=self.uri
                ) from exc
            raise ImageFetchFailed(
                f"fetching image {self.shown} failed: HTTP {exc.code} {exc.reason}", uri=self.uri
            ) from exc
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise self._net_error(exc) from exc
        with response:
            length = response.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            pos = 0
            while True:
                try:
                    n = self._fill(response.readinto)
                except (OSError, http.client.HTTPException) as exc:
                    raise self._net_error(exc) from exc
                if n == 0:
                    break
                self._take(fd, n, pos)
                pos += n
        if expected is not None and pos != expected:
            raise ImageFetchFailed(
                f"fetching image {self.shown} failed: connection closed after {pos} "
                f"of {expected} bytes",
                uri=self.uri,
            )
        return pos

    def _fill(self, readinto: Callable[[memoryview], int]) -> int:
        """Fill the buffer from a stream (short reads are common); bytes read."""
        view = memoryview(self.buf)
        done = 0
        while done < CHUNK:
            n = readinto(view[done:])
            if not n:
                break
            done += n
        return done

    # ---------------------------------------------------------------- bytes

    def _take(self, fd: int, n: int, offset: int) -> None:
        """Hash and sparsely write ``buf[:n]`` at *offset*; honour cancellation."""
        if self.stop.is_set():
            raise ImageFetchFailed(f"fetching image {self.shown} was cancelled", uri=self.uri)
        if self.hasher is not None:
            self.hasher.update(memoryview(self.buf)[:n])
        try:
            write_sparse(fd, self.buf, n, offset)
        except OSError as exc:
            raise self.local_error(exc) from exc

    def _hash_zeros(self, length: int) -> None:
        if self.hasher is None:
            return
        while length > 0:
            if self.stop.is_set():
                raise ImageFetchFailed(f"fetching image {self.shown} was cancelled", uri=self.uri)
            n = min(length, CHUNK)
            self.hasher.update(memoryview(_ZERO_CHUNK)[:n])
            length -= n

    def _check(self, fd: int, size: int) -> None:
        if self.hasher is not None:
            actual = self.hasher.hexdigest()
            if actual != self.digest:
                raise ImageChecksumMismatch(
                    f"image {self.shown} has checksum sha256:{actual}, "
                    f"expected sha256:{self.digest}",
                    uri=self.uri,
                    expected=f"sha256:{self.digest}",
                    actual=f"sha256:{actual}",
                )
        head = os.pread(fd, _HEADER, 0)
        if size < 512:
            raise ImageNotBootable(
                f"image {self.shown} is {size} bytes, too small to be a disk image",
                uri=self.uri,
            )
        if not is_bootable_header(head):
            hint = " (it is qcow2; raw images only)" if head[:4] == b"QFI\xfb" else ""
            raise ImageNotBootable(
                f"image {self.shown} is not a bootable disk image: no MBR boot signature "
                f"and no GPT header{hint}",
                uri=self.uri,
            )

    def _net_error(self, exc: BaseException) -> ImageFetchFailed:
        return ImageFetchFailed(f"fetching image {self.shown} failed: {_cause(exc)}", uri=self.uri)

    def local_error(self, exc: OSError) -> ImageFetchFailed:
        return ImageFetchFailed(
            f"cannot store image {self.shown} in the host's cache: {_cause(exc)}", uri=self.uri
        )


class ImageCache:
    """Local copies of boot images in *directory* (created if missing).

    ``fetch`` and ``evict`` are coroutines (their file and network work runs
    in a thread), ``use`` an async context manager around ``fetch``;
    ``path_for``, ``usage_bytes`` and ``remove_partials`` are quick blocking
    calls.  *timeout* bounds each network connect and read; *max_bytes*
    (None: unbounded) is the cache's bound and *on_evict* is told of every
    entry trimmed to keep it.
    """

    def __init__(
        self,
        directory: Path,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        max_bytes: int | None = None,
        on_evict: Callable[[Path], None] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.on_evict = on_evict
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}
        self._pins: dict[str, int] = {}

    def path_for(self, uri: str, *, checksum: str = "") -> Path:
        """Where the entry for ``(uri, checksum)`` lives (whether or not it exists)."""
        key = hashlib.sha256(f"{uri}\n{parse_checksum(checksum)}".encode()).hexdigest()[:40]
        return self.directory / f"{key}{_SUFFIX}"

    async def fetch(self, uri: str, *, checksum: str = "") -> Path:
        """The cached image for ``(uri, checksum)``, fetched and verified if absent."""
        digest = parse_checksum(checksum)
        _source(uri)  # reject unsupported sources before taking a lock
        final = self.path_for(uri, checksum=checksum)
        async with self._locked(final.name):
            if not await asyncio.to_thread(_touch, final):
                stop = threading.Event()
                job = _Fetch(uri, digest, final, timeout=self.timeout, stop=stop)
                try:
                    await asyncio.to_thread(job.run)
                except asyncio.CancelledError:
                    stop.set()
                    raise
                except ImageError:
                    raise
                except OSError as exc:  # e.g. the cache directory vanished
                    raise job.local_error(exc) from exc
            if self.max_bytes is not None:
                await asyncio.to_thread(self._trim, self.max_bytes, final)
            return final

    def _trim(self, max_bytes: int, keep: Path) -> None:
        """Delete the least recently used entries until the cache fits *max_bytes*.

        Never *keep*, an entry whose key lock is held, or one pinned by ``use``.
        """
        entries: list[tuple[float, int, Path]] = []
        for entry in self.directory.glob(f"*{_SUFFIX}"):
            if entry.name.startswith(_PARTIAL):
                continue
            with contextlib.suppress(FileNotFoundError):
                st = entry.stat()
                entries.append((st.st_mtime, st.st_blocks * 512, entry))
        total = sum(size for _, size, _ in entries)
        for _, size, entry in sorted(entries):
            if total <= max_bytes:
                return
            if entry == keep or entry.name in self._locks or entry.name in self._pins:
                continue
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                if self.on_evict is not None:
                    self.on_evict(entry)
            total -= size

    @contextlib.asynccontextmanager
    async def use(self, uri: str, *, checksum: str = "") -> AsyncIterator[Path]:
        """``fetch``, and keep the entry from being trimmed until the block ends (a clone)."""
        name = self.path_for(uri, checksum=checksum).name
        self._pins[name] = self._pins.get(name, 0) + 1
        try:
            yield await self.fetch(uri, checksum=checksum)
        finally:
            self._pins[name] -= 1
            if not self._pins[name]:
                del self._pins[name]

    async def evict(self, uri: str, *, checksum: str = "") -> bool:
        """Delete the entry for ``(uri, checksum)``; whether there was one."""
        final = self.path_for(uri, checksum=checksum)
        async with self._locked(final.name):
            try:
                await asyncio.to_thread(final.unlink)
            except FileNotFoundError:
                return False
            return True

    def usage_bytes(self) -> int:
        """Bytes the cache's complete entries occupy on disk (holes excluded)."""
        total = 0
        for entry in self.directory.glob(f"*{_SUFFIX}"):
            if not entry.name.startswith(_PARTIAL):
                with contextlib.suppress(FileNotFoundError):
                    total += entry.stat().st_blocks * 512
        return total

    def remove_partials(self) -> int:
        """Delete temp files left by a crash; call before the first ``fetch``."""
        removed = 0
        for entry in self.directory.glob(f"{_PARTIAL}*"):
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed += 1
        return removed

    @contextlib.asynccontextmanager
    async def _locked(self, key: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._users[key] = self._users.get(key, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._users[key] -= 1
            if not self._users[key]:
                del self._users[key], self._locks[key]
