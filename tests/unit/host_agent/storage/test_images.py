"""ImageCache against real files and a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from host_agent.storage.errors import (
    MAX_MESSAGE,
    ImageChecksumMismatch,
    ImageError,
    ImageFetchFailed,
    ImageNotBootable,
    ImageNotFound,
    InvalidChecksum,
    UnsupportedImageSource,
)
from host_agent.storage.images import (
    ImageCache,
    display_uri,
    is_bootable_header,
    parse_checksum,
)

MIB = 1 << 20


def bootable_image(size: int = 4 * MIB, *, gpt: bool = False) -> bytes:
    """An MBR (or GPT-only) disk: a boot sector, zeros, random data near the end."""
    data = bytearray(size)
    if gpt:
        data[512:520] = b"EFI PART"
    else:
        data[510:512] = b"\x55\xaa"
    data[size - MIB : size - MIB // 2] = os.urandom(MIB // 2)
    return bytes(data)


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Server:
    """A threaded HTTP server: fixed bodies per path, request counts, fault paths."""

    def __init__(self) -> None:
        self.bodies: dict[str, bytes] = {}
        self.hits: Counter[str] = Counter()
        self.delay = 0.0
        self.auth: str | None = None
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hits[self.path] += 1
                server.auth = self.headers.get("Authorization")
                if self.path == "/slow":
                    time.sleep(2.0)
                if self.path == "/boom":
                    self.send_error(500, "Internal Server Error")
                    return
                if self.path == "/short":
                    self.send_response(200)
                    self.send_header("Content-Length", str(4 * MIB))
                    self.end_headers()
                    self.wfile.write(bootable_image(MIB))
                    return
                body = server.bodies.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                time.sleep(server.delay)
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    monkeypatch.setenv("no_proxy", "*")
    srv = Server()
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture
def cache(tmp_path: Path) -> ImageCache:
    return ImageCache(tmp_path / "cache", timeout=0.5)


def cache_files(cache: ImageCache) -> list[str]:
    return sorted(p.name for p in cache.directory.iterdir())


# ------------------------------------------------------------------ http


async def test_http_fetch_verifies_and_caches(server: Server, cache: ImageCache) -> None:
    image = bootable_image()
    server.bodies["/disk.img"] = image
    path = await cache.fetch(f"{server.url}/disk.img", checksum=sha(image))
    assert path.read_bytes() == image
    assert path.parent == cache.directory
    again = await cache.fetch(f"{server.url}/disk.img", checksum=sha(image))
    assert again == path
    assert server.hits["/disk.img"] == 1
    assert cache_files(cache) == [path.name]
    # The zero megabytes were not written: the download is sparse.
    assert path.stat().st_blocks * 512 < len(image) // 2


async def test_concurrent_fetches_of_one_key_download_once(
    server: Server, cache: ImageCache
) -> None:
    image = bootable_image()
    server.bodies["/disk.img"] = image
    server.delay = 0.2
    uri = f"{server.url}/disk.img"
    paths = await asyncio.gather(*(cache.fetch(uri, checksum=sha(image)) for _ in range(4)))
    assert len(set(paths)) == 1
    assert server.hits["/disk.img"] == 1
    assert cache._locks == {}


async def test_different_checksum_is_a_different_entry(server: Server, cache: ImageCache) -> None:
    image = bootable_image()
    server.bodies["/disk.img"] = image
    a = await cache.fetch(f"{server.url}/disk.img")
    b = await cache.fetch(
        f"{server.url}/disk.img", checksum=sha(image).upper().replace("SHA", "sha")
    )
    assert a != b
    assert server.hits["/disk.img"] == 2


async def test_wrong_checksum_names_both_digests_and_leaves_nothing(
    server: Server, cache: ImageCache
) -> None:
    image = bootable_image()
    server.bodies["/disk.img"] = image
    wrong = "sha256:" + "0" * 64
    with pytest.raises(ImageChecksumMismatch) as err:
        await cache.fetch(f"{server.url}/disk.img", checksum=wrong)
    assert err.value.expected == wrong
    assert err.value.actual == sha(image)
    assert wrong in str(err.value) and sha(image) in str(err.value)
    assert cache_files(cache) == []


async def test_http_404_is_not_found(server: Server, cache: ImageCache) -> None:
    with pytest.raises(ImageNotFound, match="404"):
        await cache.fetch(f"{server.url}/nope.img")
    assert cache_files(cache) == []


async def test_http_500_is_fetch_failed(server: Server, cache: ImageCache) -> None:
    with pytest.raises(ImageFetchFailed, match="HTTP 500"):
        await cache.fetch(f"{server.url}/boom")


async def test_connection_refused_names_uri_and_cause(cache: ImageCache) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"http://127.0.0.1:{port}/disk.img"
    with pytest.raises(ImageFetchFailed) as err:
        await cache.fetch(uri)
    assert uri in str(err.value) and "refused" in str(err.value)


async def test_timeout_is_fetch_failed(server: Server, cache: ImageCache) -> None:
    with pytest.raises(ImageFetchFailed, match="timed out"):
        await cache.fetch(f"{server.url}/slow")
    assert cache_files(cache) == []


async def test_body_cut_short_is_fetch_failed(server: Server, cache: ImageCache) -> None:
    with pytest.raises(ImageFetchFailed, match="closed after"):
        await cache.fetch(f"{server.url}/short")
    assert cache_files(cache) == []


async def test_messages_hide_credentials_and_queries(server: Server, cache: ImageCache) -> None:
    host = server.url.removeprefix("http://")
    uri = f"http://user:hunter2@{host}/{'x' * 600}.img?token=s3cr3t"
    with pytest.raises(ImageNotFound) as err:
        await cache.fetch(uri)
    msg = str(err.value)
    assert "hunter2" not in msg and "s3cr3t" not in msg
    assert "\n" not in msg and len(msg) <= MAX_MESSAGE
    assert err.value.uri == uri


async def test_userinfo_becomes_basic_auth(server: Server, cache: ImageCache) -> None:
    server.bodies["/disk.img"] = bootable_image()
    host = server.url.removeprefix("http://")
    await cache.fetch(f"http://alice:open%20sesame@{host}/disk.img")
    assert server.auth == "Basic " + base64.b64encode(b"alice:open sesame").decode()


async def test_cancelled_fetch_leaves_nothing(tmp_path: Path, server: Server) -> None:
    cache = ImageCache(tmp_path / "cache", timeout=5.0)
    task = asyncio.create_task(cache.fetch(f"{server.url}/slow"))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(50):  # the worker thread notices at its next step
        if not cache_files(cache):
            break
        await asyncio.sleep(0.1)
    assert cache_files(cache) == []


# ------------------------------------------------------------------ files


def sparse_source(path: Path, size: int = 64 * MIB) -> bytes:
    """A bootable file with data at 0 and near the end and a hole in between."""
    with path.open("wb") as f:
        f.truncate(size)
        f.write(bootable_image(2 * MIB))
        f.seek(size - 3 * MIB)
        f.write(os.urandom(MIB))
    return path.read_bytes()


@pytest.mark.parametrize("form", ["file", "plain"])
async def test_file_source_is_copied_sparsely(tmp_path: Path, cache: ImageCache, form: str) -> None:
    src = tmp_path / "src.img"
    data = sparse_source(src)
    uri = f"file://{src}" if form == "file" else str(src)
    path = await cache.fetch(uri, checksum=sha(data))
    assert path.read_bytes() == data
    assert path.stat().st_size == src.stat().st_size
    assert path.stat().st_blocks <= src.stat().st_blocks
    assert path.stat().st_blocks * 512 < 4 * MIB


async def test_cached_entry_is_reused_after_the_source_vanishes(
    tmp_path: Path, cache: ImageCache
) -> None:
    src = tmp_path / "src.img"
    sparse_source(src, 8 * MIB)
    first = await cache.fetch(str(src))
    src.unlink()
    assert await cache.fetch(str(src)) == first


async def test_missing_file_is_not_found(tmp_path: Path, cache: ImageCache) -> None:
    with pytest.raises(ImageNotFound):
        await cache.fetch(f"file://{tmp_path}/missing.img")


async def test_directory_is_fetch_failed(tmp_path: Path, cache: ImageCache) -> None:
    with pytest.raises(ImageFetchFailed, match="not a regular file"):
        await cache.fetch(str(tmp_path))


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"\x55\xaa", "too small"),
        (os.urandom(509) + b"\x00" * 3 + os.urandom(4096), "no MBR boot signature"),
        (b"QFI\xfb" + bytes(1 << 16), "qcow2"),
    ],
)
async def test_not_bootable_leaves_nothing(
    tmp_path: Path, cache: ImageCache, content: bytes, match: str
) -> None:
    src = tmp_path / "bad.img"
    src.write_bytes(content)
    with pytest.raises(ImageNotBootable, match=match):
        await cache.fetch(str(src))
    assert cache_files(cache) == []


async def test_gpt_only_image_is_bootable(tmp_path: Path, cache: ImageCache) -> None:
    src = tmp_path / "gpt.img"
    src.write_bytes(bootable_image(2 * MIB, gpt=True))
    assert (await cache.fetch(str(src))).exists()


# ------------------------------------------------------------------ inputs


@pytest.mark.parametrize(
    "uri", ["s3://bucket/disk.img", "ftp://host/disk.img", "disk.img", "file://host/disk.img"]
)
async def test_unsupported_sources(cache: ImageCache, uri: str) -> None:
    with pytest.raises(UnsupportedImageSource):
        await cache.fetch(uri)


@pytest.mark.parametrize(
    "checksum", ["sha256:abc", "md5:" + "0" * 32, "0" * 64, "sha256:" + "g" * 64]
)
async def test_invalid_checksums(cache: ImageCache, checksum: str) -> None:
    with pytest.raises(InvalidChecksum):
        await cache.fetch("/x.img", checksum=checksum)


@given(st.text(alphabet="0123456789abcdefABCDEF", min_size=64, max_size=64))
def test_parse_checksum_accepts_any_case(hexdigits: str) -> None:
    assert parse_checksum(f"sha256:{hexdigits}") == hexdigits.lower()


@given(st.binary(max_size=600))
def test_is_bootable_header_matches_the_signatures(head: bytes) -> None:
    expected = head[510:512] == b"\x55\xaa" or head[512:520] == b"EFI PART"
    assert is_bootable_header(head) == expected


@given(st.text(max_size=400))
def test_display_uri_is_one_bounded_line(uri: str) -> None:
    shown = display_uri(uri)
    assert "\n" not in shown and len(shown) <= 160


def test_errors_share_one_base() -> None:
    for cls in (ImageNotFound, ImageFetchFailed, ImageNotBootable, UnsupportedImageSource):
        assert issubclass(cls, ImageError)
    assert issubclass(ImageChecksumMismatch, ImageError)


# ------------------------------------------------------------------ housekeeping


async def test_evict_usage_and_partials(tmp_path: Path, cache: ImageCache) -> None:
    src = tmp_path / "src.img"
    sparse_source(src, 8 * MIB)
    path = await cache.fetch(str(src))
    assert cache.usage_bytes() == path.stat().st_blocks * 512 > 0
    (cache.directory / ".partial-crashed.img").write_bytes(b"x")
    assert cache.usage_bytes() == path.stat().st_blocks * 512
    assert cache.remove_partials() == 1
    assert await cache.evict(str(src)) is True
    assert await cache.evict(str(src)) is False
    assert cache_files(cache) == []


def image_sources(tmp_path: Path, count: int) -> list[Path]:
    """*count* different bootable files, each allocating 2.5 MiB."""
    out = []
    for i in range(count):
        src = tmp_path / f"src{i}.img"
        sparse_source(src, 8 * MIB)
        out.append(src)
    return out


async def test_bounded_cache_deletes_the_least_recently_used(tmp_path: Path) -> None:
    a, b, c = image_sources(tmp_path, 3)
    evicted: list[Path] = []
    probe = ImageCache(tmp_path / "probe")
    one = (await probe.fetch(str(a))).stat().st_blocks * 512
    cache = ImageCache(tmp_path / "cache", max_bytes=2 * one, on_evict=evicted.append)
    pa = await cache.fetch(str(a))
    pb = await cache.fetch(str(b))
    os.utime(pa, (time.time() - 60, time.time() - 60))  # a was used long ago
    os.utime(pb, (time.time() - 30, time.time() - 30))
    assert await cache.fetch(str(a)) == pa  # a hit marks a used now: b is the oldest
    pc = await cache.fetch(str(c))
    assert evicted == [pb]
    assert pa.exists() and pc.exists() and not pb.exists()
    assert cache.usage_bytes() <= 2 * one
    # file times are coarse (a tick of the kernel clock): make a older than c
    os.utime(pa, (time.time() - 10, time.time() - 10))
    assert await cache.fetch(str(b)) == pb and pb.exists()  # fetched again when needed
    assert evicted == [pb, pa]


async def test_an_image_in_use_is_never_trimmed(tmp_path: Path) -> None:
    a, b = image_sources(tmp_path, 2)
    cache = ImageCache(tmp_path / "cache", max_bytes=1)  # smaller than any image
    async with cache.use(str(a)) as pa:
        pb = await cache.fetch(str(b))
        assert pa.exists() and pb.exists()  # a is pinned, b was just fetched
    pa2 = await cache.fetch(str(a))
    assert pa2 == pa and pa.exists() and not pb.exists()
