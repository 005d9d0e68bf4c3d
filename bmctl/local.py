"""``bmctl`` verbs that never talk to the control plane: ``config`` (contexts
in the config file) and ``completion`` (shell scripts generated from the
argparse tree, so they always match the commands this bmctl has).

A local verb is ``(parser, args) -> Result`` stored as the parser default
``local``; ``bmctl.main`` runs it without resolving an endpoint.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bmaas_tls import ClientTls, TlsError, channel_credentials
from bmctl import exitcodes
from bmctl.client import CliError
from bmctl.commands import Result
from bmctl.config import Config, config_path, read_token_file
from bmctl.output import grid
from bmctl.parser import SubParsers

LocalVerb = Callable[[argparse.ArgumentParser, argparse.Namespace], Result]


# --- config ------------------------------------------------------------------------------


def _load() -> Config:
    return Config.load(config_path())


def get_contexts(_parser: argparse.ArgumentParser, args: argparse.Namespace) -> Result:
    cfg = _load()
    rows = []
    for name in sorted(cfg.contexts):
        ctx = cfg.contexts[name]
        rows.append(
            {
                "name": name,
                "current": name == cfg.current_context,
                "endpoint": ctx.get("endpoint", ""),
                "token": "set" if ctx.get("token") else "",
                "token-file": ctx.get("token-file", ""),
                "ca": ctx.get("ca", ""),
            }
        )
    cells = [["CURRENT", "NAME", "ENDPOINT", "TOKEN"]]
    for r in rows:
        token = str(r["token"]) or (f"file {r['token-file']}" if r["token-file"] else "")
        cells.append(["*" if r["current"] else "", str(r["name"]), str(r["endpoint"]), token])
    return Result([], text=grid(cells), data=rows)


def current_context(_parser: argparse.ArgumentParser, args: argparse.Namespace) -> Result:
    cfg = _load()
    if not cfg.current_context:
        raise CliError(f"no current-context in {cfg.path}", exitcodes.USAGE)
    return Result([], text=cfg.current_context, data={"current-context": cfg.current_context})


def use_context(_parser: argparse.ArgumentParser, args: argparse.Namespace) -> Result:
    cfg = _load()
    cfg.context(args.context_name)  # must exist
    cfg.current_context = args.context_name
    cfg.save()
    return Result([], notes=[f'switched to context "{args.context_name}"'])


def set_context(_parser: argparse.ArgumentParser, args: argparse.Namespace) -> Result:
    if args.ctx_token and args.ctx_token_file:
        raise CliError("set-context: give --token or --token-file, not both", exitcodes.USAGE)
    if args.ctx_token_file:
        path = os.path.abspath(os.path.expanduser(args.ctx_token_file))
        read_token_file(path, "--token-file")  # readable now, or say so now
        args.ctx_token_file = path
    if args.ctx_ca:
        args.ctx_ca = os.path.abspath(os.path.expanduser(args.ctx_ca))
        try:
            channel_credentials(ClientTls(ca=Path(args.ctx_ca)))  # readable now, or say so now
        except TlsError as exc:
            raise CliError(f"--ca: {exc}", exitcodes.USAGE) from None
    cfg = _load()
    created = args.context_name not in cfg.contexts
    ctx = cfg.contexts.setdefault(args.context_name, {})
    if args.ctx_endpoint:
        ctx["endpoint"] = args.ctx_endpoint
    if args.ctx_ca:
        ctx["ca"] = args.ctx_ca
    if args.ctx_token:
        ctx["token"] = args.ctx_token
        ctx.pop("token-file", None)
    if args.ctx_token_file:
        ctx["token-file"] = args.ctx_token_file
        ctx.pop("token", None)
    notes = [f'context "{args.context_name}" {"created" if created else "modified"}']
    if not cfg.current_context or args.use:
        cfg.current_context = args.context_name
        notes.append(f'switched to context "{args.context_name}"')
    cfg.save()
    return Result([], notes=notes)


def delete_context(_parser: argparse.ArgumentParser, args: argparse.Namespace) -> Result:
    cfg = _load()
    cfg.context(args.context_name)
    del cfg.contexts[args.context_name]
    if cfg.current_context == args.context_name:
        cfg.current_context = ""
    cfg.save()
    return Result([], notes=[f'deleted context "{args.context_name}"'])


# --- completion --------------------------------------------------------------------------


@dataclass
class Node:
    """One parser of the tree, as completion sees it."""

    path: str  # "" for bmctl itself, "host", "host enroll", ...
    commands: list[tuple[str, str]] = field(default_factory=list)  # (name, help)
    options: list[tuple[str, str]] = field(default_factory=list)  # (option string, help)
    values: dict[str, list[str] | None] = field(default_factory=dict)  # option -> choices
    positional: list[str] = field(default_factory=list)  # choices of positionals


def walk(parser: argparse.ArgumentParser, path: str = "") -> Iterator[Node]:
    """Every parser of the tree (pre-order) with its subcommands and options."""
    node = Node(path)
    children: list[tuple[str, argparse.ArgumentParser]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                node.commands.append((name, helps.get(name, "")))
                children.append((name, sub))
        elif action.option_strings:
            for opt in action.option_strings:
                node.options.append((opt, action.help or ""))
                if action.nargs == 0:
                    continue
                if action.choices is not None:
                    node.values[opt] = [str(c) for c in action.choices]
                elif opt.endswith("-file"):
                    node.values[opt] = None  # a file name
                else:
                    node.values[opt] = []  # free text
        elif action.choices is not None:
            node.positional += [str(c) for c in action.choices]
    yield node
    for name, sub in children:
        yield from walk(sub, f"{path} {name}".strip())


def commands_of(parser: argparse.ArgumentParser) -> list[tuple[str, str]]:
    """Every (noun, verb) of the tree: what the completion scripts (and tests) cover."""
    out = []
    for node in walk(parser):
        parts = node.path.split()
        if len(parts) == 2:
            out.append((parts[0], parts[1]))
    return out


def _values_case(nodes: list[Node], indent: str) -> list[str]:
    lines = []
    for node in nodes:
        for opt, values in node.values.items():
            text = "@file" if values is None else " ".join(values)
            lines.append(f'{indent}"{node.path}|{opt}") echo "{text}" ;;')
    return lines


def _zquote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def bash_script(parser: argparse.ArgumentParser) -> str:
    nodes = list(walk(parser))
    words = [
        f'    "{n.path}") echo "{" ".join([c for c, _ in n.commands] + n.positional)}" ;;'
        for n in nodes
    ]
    options = [f'    "{n.path}") echo "{" ".join(o for o, _ in n.options)}" ;;' for n in nodes]
    subs = [
        f'    "{n.path}") echo "{" ".join(c for c, _ in n.commands)}" ;;'
        for n in nodes
        if n.commands
    ]
    return "\n".join(
        [
            "# bash completion for bmctl (generated by `bmctl completion bash`)",
            "# load it with: source <(bmctl completion bash)",
            "",
            "_bmctl_subcommands() {",
            '  case "$1" in',
            *subs,
            "  esac",
            "}",
            "",
            "_bmctl_words() {",
            '  case "$1" in',
            *words,
            "  esac",
            "}",
            "",
            "_bmctl_options() {",
            '  case "$1" in',
            *options,
            "  esac",
            "}",
            "",
            "# the values of option $2 under command path $1; status 1: the option takes none",
            "_bmctl_values() {",
            '  case "$1|$2" in',
            *_values_case(nodes, "    "),
            "    *) return 1 ;;",
            "  esac",
            "}",
            "",
            "_bmctl() {",
            '  local cur="${COMP_WORDS[COMP_CWORD]}" prev path="" w i skip=0 values',
            "  for ((i = 1; i < COMP_CWORD; i++)); do",
            '    w="${COMP_WORDS[i]}"',
            "    if ((skip)); then skip=0; continue; fi",
            "    if [[ $w == -* ]]; then",
            '      if [[ $w != *=* ]] && _bmctl_values "$path" "$w" >/dev/null; then skip=1; fi',
            "      continue",
            "    fi",
            '    if [[ " $(_bmctl_subcommands "$path") " == *" $w "* ]]; then',
            '      path="${path:+$path }$w"',
            "    fi",
            "  done",
            '  prev="${COMP_WORDS[COMP_CWORD-1]}"',
            "  if ((COMP_CWORD > 1)) && [[ $prev == -* && $prev != *=* ]] &&",
            '    values=$(_bmctl_values "$path" "$prev"); then',
            '    if [[ $values == @file ]]; then COMPREPLY=($(compgen -f -- "$cur"))',
            '    else COMPREPLY=($(compgen -W "$values" -- "$cur")); fi',
            "    return 0",
            "  fi",
            "  if [[ $cur == -* ]]; then",
            '    COMPREPLY=($(compgen -W "$(_bmctl_options "$path")" -- "$cur"))',
            "  else",
            '    COMPREPLY=($(compgen -W "$(_bmctl_words "$path")" -- "$cur"))',
            "  fi",
            "}",
            "",
            "complete -F _bmctl bmctl",
            "",
        ]
    )


def zsh_script(parser: argparse.ArgumentParser) -> str:
    nodes = list(walk(parser))

    def described(pairs: list[tuple[str, str]]) -> str:
        return " ".join(_zquote(f"{name}:{help_}".replace("\n", " ")) for name, help_ in pairs)

    commands = [f'    "{n.path}") items=({described(n.commands)}) ;;' for n in nodes]
    options = [f'    "{n.path}") items=({described(n.options)}) ;;' for n in nodes]
    positional = [
        f'    "{n.path}") items=({" ".join(n.positional)}) ;;' for n in nodes if n.positional
    ]
    subs = [
        f'    "{n.path}") print -r -- "{" ".join(c for c, _ in n.commands)}" ;;'
        for n in nodes
        if n.commands
    ]
    return "\n".join(
        [
            "#compdef bmctl",
            "# zsh completion for bmctl (generated by `bmctl completion zsh`)",
            "# load it with: source <(bmctl completion zsh)  (after compinit),",
            "# or save it as _bmctl in a directory of $fpath",
            "",
            "_bmctl_subcommands() {",
            '  case "$1" in',
            *subs,
            "  esac",
            "}",
            "",
            "# the values of option $2 under command path $1; status 1: the option takes none",
            "_bmctl_values() {",
            '  case "$1|$2" in',
            *[line.replace("echo", "print -r --") for line in _values_case(nodes, "    ")],
            "    *) return 1 ;;",
            "  esac",
            "}",
            "",
            "_bmctl() {",
            '  local cur="${words[CURRENT]}" prev="${words[CURRENT-1]}" path="" w i skip=0 values',
            "  local -a items",
            "  for ((i = 2; i < CURRENT; i++)); do",
            '    w="${words[i]}"',
            "    if ((skip)); then skip=0; continue; fi",
            "    if [[ $w == -* ]]; then",
            '      if [[ $w != *=* ]] && _bmctl_values "$path" "$w" >/dev/null; then skip=1; fi',
            "      continue",
            "    fi",
            '    if [[ " $(_bmctl_subcommands "$path") " == *" $w "* ]]; then',
            '      path="${path:+$path }$w"',
            "    fi",
            "  done",
            "  if ((CURRENT > 2)) && [[ $prev == -* && $prev != *=* ]] &&",
            '    values=$(_bmctl_values "$path" "$prev"); then',
            "    if [[ $values == @file ]]; then _files",
            "    else compadd -- ${=values}; fi",
            "    return",
            "  fi",
            "  if [[ $cur == -* ]]; then",
            '    case "$path" in',
            *options,
            "    esac",
            "    _describe -t options 'bmctl option' items",
            "    return",
            "  fi",
            '  case "$path" in',
            *commands,
            "  esac",
            "  (( ${#items} )) && _describe -t commands 'bmctl command' items",
            "  items=()",
            '  case "$path" in',
            *positional,
            "  esac",
            "  (( ${#items} )) && compadd -- ${items[@]}",
            "  return 0",
            "}",
            "",
            'if [[ "${zsh_eval_context[-1]}" == loadautofunc ]]; then',
            '  _bmctl "$@"',
            "else",
            "  compdef _bmctl bmctl",
            "fi",
            "",
        ]
    )


def completion(shell: str) -> LocalVerb:
    def run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Result:
        script = bash_script(parser) if shell == "bash" else zsh_script(parser)
        return Result([], text=script.rstrip("\n"), plain=True)

    return run


# --- argparse wiring ---------------------------------------------------------------------


def _local(
    sub: SubParsers, name: str, func: LocalVerb, help_: str, *, positional: str | None = None
) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=help_, description=help_)
    if positional:
        p.add_argument("context_name", metavar=positional)
    p.set_defaults(local=func)
    return p


def register(nouns: SubParsers) -> None:
    desc = f"contexts in the config file ({config_path()})"
    config = nouns.add_parser("config", help="contexts in the config file", description=desc)
    verbs = config.add_subparsers(dest="verb", metavar="VERB", required=True)
    _local(verbs, "get-contexts", get_contexts, "list the contexts")
    _local(verbs, "current-context", current_context, "print the current context")
    _local(verbs, "use-context", use_context, "make NAME the current context", positional="NAME")
    p = _local(
        verbs,
        "set-context",
        set_context,
        "create or change context NAME (the first one also becomes current)",
        positional="NAME",
    )
    p.add_argument("--endpoint", dest="ctx_endpoint", default="", help="HOST:PORT[,HOST:PORT...]")
    p.add_argument(
        "--token", dest="ctx_token", default="", help="bearer token (stored in the file)"
    )
    p.add_argument(
        "--token-file", dest="ctx_token_file", default="", help="read the token from this file"
    )
    p.add_argument("--ca", dest="ctx_ca", default="", help="the region's CA bundle (PEM file)")
    p.add_argument("--use", action="store_true", help="also make it the current context")
    _local(verbs, "delete-context", delete_context, "remove context NAME", positional="NAME")

    comp = nouns.add_parser(
        "completion",
        help="shell completion script",
        description="print a completion script: source <(bmctl completion bash)",
    )
    shells = comp.add_subparsers(dest="verb", metavar="SHELL", required=True)
    for shell in ("bash", "zsh"):
        _local(shells, shell, completion(shell), f"completion for {shell}")
