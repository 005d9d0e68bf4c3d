"""``bmctl`` entry point: ``bmctl [GLOBAL FLAGS] NOUN VERB [ARGS]``.

The endpoint and token come from flags, the environment or a context of the
config file (``bmctl.config``); the endpoint may list several replicas,
comma-separated (``bmctl.client`` moves to the next one when a replica is
unavailable).  The parsed verb runs against a ``bmctl.client.Client``
(``config`` and ``completion`` verbs run locally, ``bmctl.local``).

Every failure is ONE line on stderr, ``bmctl: error: ...``, and a documented
exit status (``bmctl.exitcodes``): bad flags (argparse's own errors too), a
bad config or token file, RPC failures (``<CODE>: <message>`` plus field
violations), ``--wait`` timeouts.  Never a traceback: an unexpected
exception is reported the same way.  Results print as a table, JSON or YAML
(``-o``); one-time secrets and other notes go to stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn, cast

from bmaas_tls import ClientTls
from bmctl import commands, exitcodes, local, output
from bmctl import parser as command_tree
from bmctl.client import Client, CliError
from bmctl.config import resolve

DESCRIPTION = """\
bmaas command-line client.

The endpoint, token and CA come from --endpoint/--token/--token-file/--ca,
else BMAAS_ENDPOINT/BMAAS_TOKEN/BMAAS_CA, else a context of the config file
($BMAAS_CONFIG, $XDG_CONFIG_HOME/bmaas/config.toml or
~/.config/bmaas/config.toml; pick one with --context or BMAAS_CONTEXT;
see `bmctl config --help`).  Connections are TLS, trusting --ca (the
region's CA) or the system's roots; plaintext only with --insecure."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``bmctl: error: <command>: <problem>``."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("bmctl").strip()
        where = f"{command}: " if command else ""
        hint = f" (see '{self.prog} --help')"
        self.exit(exitcodes.USAGE, f"bmctl: error: {where}{message}{hint}\n")


def build_parser() -> Parser:
    parser = Parser(
        prog="bmctl",
        description=DESCRIPTION,
        epilog=exitcodes.epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--endpoint", default="", help="HOST:PORT[,HOST:PORT...] (replicas)")
    parser.add_argument("--token", default="", help="bearer token")
    parser.add_argument("--token-file", default="", help="read the bearer token from this file")
    parser.add_argument("--context", default="", help="use this context of the config file")
    parser.add_argument("--ca", default="", help="trust this CA bundle (PEM) for TLS")
    parser.add_argument("--insecure", action="store_true", help="plaintext (no TLS)")
    parser.add_argument(
        "--request-timeout",
        type=command_tree.seconds,
        default=30.0,
        metavar="SECONDS",
        help="deadline of each API call (default 30)",
    )
    parser.add_argument("-o", "--output", choices=output.FORMATS, default="table")
    # (the subparsers are Parser too: one-line errors at every level)
    nouns = cast(
        command_tree.SubParsers,
        parser.add_subparsers(dest="noun", metavar="NOUN", required=True),
    )
    command_tree.register(nouns)
    local.register(nouns)
    for noun in nouns.choices.values():
        for action in noun._actions:
            if isinstance(action, argparse._SubParsersAction):
                for verb in action.choices.values():  # `-o` after the verb too
                    verb.add_argument(
                        "-o", "--output", choices=output.FORMATS, default=argparse.SUPPRESS
                    )
    return parser


def render(result: commands.Result, fmt: str) -> str:
    if result.plain:
        return result.text or ""
    if fmt in ("json", "yaml"):
        data: object
        if result.data is not None:
            data = result.data
        elif result.single and result.messages:
            data = result.messages[0]
        elif not result.messages and not result.columns:
            return ""
        else:
            data = result.messages
        return output.to_json(data) if fmt == "json" else output.to_yaml(data)
    if result.text is not None:
        return result.text
    if not result.columns:
        return ""
    return output.table(result.messages, result.columns)


def run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> commands.Result:
    if getattr(args, "local", None) is not None:
        result: commands.Result = args.local(parser, args)
        return result
    target = resolve(
        endpoint=args.endpoint,
        token=args.token,
        token_file=args.token_file,
        context=args.context,
        ca=args.ca,
    )
    if args.insecure and args.ca:
        raise CliError("--insecure and --ca exclude each other", exitcodes.USAGE)
    tls = ClientTls(insecure=True) if args.insecure else ClientTls(ca=_ca_path(target.ca))
    with Client(target.endpoint, target.token, timeout=args.request_timeout, tls=tls) as client:
        result = args.func(client, args)
        return result


def _ca_path(ca: str) -> Path | None:
    return Path(ca).expanduser() if ca else None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage error (2, one line already printed) or --help (0)
        return exc.code if isinstance(exc.code, int) else exitcodes.USAGE
    try:
        result = run(parser, args)
        text = render(result, args.output)
    except CliError as err:
        print(f"bmctl: error: {_one_line(str(err))}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("bmctl: error: interrupted", file=sys.stderr)
        return exitcodes.INTERRUPTED
    except Exception as exc:  # a bug: still one line, never a traceback
        detail = f"{type(exc).__name__}: {exc}"
        print(f"bmctl: error: internal error: {_one_line(detail)}", file=sys.stderr)
        if os.environ.get("BMCTL_DEBUG"):
            raise
        return exitcodes.API_ERROR
    if text:
        try:
            print(text)
            sys.stdout.flush()
        except BrokenPipeError:  # `bmctl ... | head`
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return exitcodes.OK
    for note in result.notes:
        print(f"bmctl: {note}", file=sys.stderr)
    return exitcodes.OK


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


if __name__ == "__main__":
    raise SystemExit(main())
