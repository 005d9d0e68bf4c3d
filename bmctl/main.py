"""``bmctl`` entry point: ``bmctl [--endpoint HOST:PORT] [--token T] [-o table|json] NOUN VERB``.

Endpoint and token default to ``BMAAS_ENDPOINT`` / ``BMAAS_TOKEN``; the
endpoint may list several replicas, comma-separated (``bmctl.client`` moves
to the next one when a replica is unavailable).  The
parsed verb runs against a ``bmctl.client.Client``; a ``CliError`` (bad
flags, or an RPC failure rendered as ``<CODE>: <message>`` plus field
violations) is printed to stderr as ``bmctl: error: ...`` with a non-zero
exit status (1 for API errors, 2 for usage).  Results print as a table, or
as JSON with ``-o json``; one-time secrets are followed by a note on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from bmctl import commands, output
from bmctl.client import Client, CliError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bmctl", description="bmaas command-line client")
    parser.add_argument("--endpoint", default=os.environ.get("BMAAS_ENDPOINT", ""))
    parser.add_argument("--token", default=os.environ.get("BMAAS_TOKEN", ""))
    parser.add_argument("--timeout", type=float, default=30.0, help="per-call deadline (s)")
    parser.add_argument("-o", "--output", choices=["table", "json"], default="table")
    nouns = parser.add_subparsers(dest="noun", required=True)
    commands.register(nouns)
    return parser


def render(result: commands.Result, fmt: str) -> str:
    if fmt == "json":
        if result.single and result.messages:
            return output.to_json(result.messages[0])
        if not result.messages and not result.columns:
            return ""
        return output.to_json(result.messages)
    if not result.columns:
        return ""
    return output.table(result.messages, result.columns)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with Client(args.endpoint, args.token, timeout=args.timeout) as client:
            result = args.func(client, args)
    except CliError as err:
        print(f"bmctl: error: {err}", file=sys.stderr)
        return err.exit_code
    text = render(result, args.output)
    if text:
        print(text)
    for note in result.notes:
        print(f"bmctl: {note}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
