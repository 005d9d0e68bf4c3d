"""Generate the ``bmaas.v1`` Python package from ``protos/bmaas/v1/*.proto``.

protoc (from grpcio-tools) writes messages (``*_pb2.py``), gRPC stubs
(``*_pb2_grpc.py``) and mypy-protobuf type stubs (``*.pyi``) under
``<out>/bmaas/v1``.  The output is committed and nobody edits it;
``--check`` regenerates into a temporary directory and fails if the committed
tree differs, which keeps generation reproducible.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PACKAGE = Path("bmaas") / "v1"
HEADER = '"""Generated from protos/bmaas/v1 by `make protos`. Do not edit."""\n'


def generate(out: Path) -> None:
    sources = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / PACKAGE).glob("*.proto"))
    if not sources:
        raise SystemExit(f"no .proto files under {PROTO_ROOT / PACKAGE}")
    target = out / PACKAGE
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    well_known = str(resources.files("grpc_tools") / "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *sources,
    ]
    # The mypy plugins are console scripts next to this interpreter.
    bindir = str(Path(sys.executable).parent)
    os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    code = protoc.main(args)
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")
    (out / "bmaas" / "__init__.py").write_text(HEADER)
    (target / "__init__.py").write_text(HEADER)
    (out / "bmaas" / "py.typed").write_text("")


def check() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        cmp = filecmp.dircmp(Path(tmp) / "bmaas", ROOT / "bmaas", ignore=["__pycache__"])
        diffs = _differences(cmp)
    if diffs:
        print("generated code is stale; run `make protos`:", *diffs, sep="\n  ", file=sys.stderr)
        return 1
    return 0


def _differences(cmp: filecmp.dircmp[str]) -> list[str]:
    found = [f"only in fresh output: {n}" for n in cmp.left_only]
    found += [f"only in tree: {n}" for n in cmp.right_only]
    found += [f"differs: {n}" for n in cmp.diff_files]
    for sub in cmp.subdirs.values():
        found += _differences(sub)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    ns = parser.parse_args()
    if ns.check:
        return check()
    generate(ns.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
