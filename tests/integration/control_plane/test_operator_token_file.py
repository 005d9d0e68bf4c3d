"""Operator tokens from ``--operator-token-file`` in a real control-plane
process: two tokens at once, rotation by rewriting the file, the single
``BMAAS_OPERATOR_TOKEN`` still accepted, and a file others can read refused
at startup in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grpc

from bmaas.v1 import tenant_pb2
from tools.region.control_plane import Clients, ControlPlaneProcess, bearer
from tools.region.etcd import EtcdServer
from tools.region.wait import wait_for

OLD, NEW, NEWER = ("op-" + name * 4 for name in ("old", "new", "newer"))
SINGLE = "op-single-from-env-0123"


def write(path: Path, *tokens: str, mode: int = 0o600) -> None:
    """Replace *path* atomically (as an operator's tooling should)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write("# operator tokens\n" + "".join(f"{t}\n" for t in tokens))
    os.chmod(tmp, mode)
    os.replace(tmp, path)


async def accepted(c: Clients, token: str) -> bool:
    try:
        await c.operator.ListTenants(tenant_pb2.ListRequest(), metadata=bearer(token))
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.UNAUTHENTICATED, exc
        return False
    return True


async def test_two_tokens_from_the_file_and_rotation_by_rewriting_it(
    etcd: EtcdServer, tmp_path: Path
) -> None:
    tokens = tmp_path / "operator-tokens"
    write(tokens, OLD, NEW)
    cp = ControlPlaneProcess(
        etcd,
        controllers=False,
        operator_token=SINGLE,
        extra_args=("--operator-token-file", str(tokens)),
    ).start()
    try:
        async with Clients(cp.port) as c:
            for token in (OLD, NEW, SINGLE):
                assert await accepted(c, token), token
            assert not await accepted(c, NEWER)
            write(tokens, NEW, NEWER)  # rotate: OLD out, NEWER in

            async def rotated() -> bool:
                return await accepted(c, NEWER) and not await accepted(c, OLD)

            await wait_for(rotated, timeout=5.0)
            assert await accepted(c, NEW) and await accepted(c, SINGLE)
            write(tokens, NEWER, mode=0o644)  # widened: refused, tokens kept
            assert "group or others" in await _log_line(cp, "not re-read")
            assert await accepted(c, NEW) and await accepted(c, NEWER)
    finally:
        cp.close()


async def _log_line(cp: ControlPlaneProcess, text: str) -> str:
    async def line() -> str:
        return next((ln for ln in cp.log.read_text().splitlines() if text in ln), "")

    return await wait_for(line, timeout=5.0)


def test_a_token_file_others_can_read_stops_startup_in_one_line(tmp_path: Path) -> None:
    tokens = tmp_path / "operator-tokens"
    write(tokens, OLD, mode=0o644)
    # plaintext is fine here (nothing is served): say so, where TLS is required
    config = tmp_path / "cp.toml"
    config.write_text("insecure = true\n")
    proc = subprocess.run(
        [sys.executable, "-m", "control_plane.main", "--etcd", "http://127.0.0.1:9",
         "--listen", "127.0.0.1:0", "--config", str(config),
         "--operator-token-file", str(tokens)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--operator-token-file" in lines[0] and "chmod 600" in lines[0]
