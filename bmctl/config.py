"""Where ``bmctl`` gets its endpoint, token and CA: flags, environment, config file.

The config file (``$BMAAS_CONFIG``, else ``$XDG_CONFIG_HOME/bmaas/config.toml``,
else ``~/.config/bmaas/config.toml``) holds named contexts, kubectl style::

    current-context = "ops"

    [contexts.ops]
    endpoint = "10.0.0.1:7443,10.0.0.2:7443"
    token-file = "/etc/bmaas/operator.token"
    ca = "/etc/bmaas/ca.pem"

    [contexts.acme]
    endpoint = "10.0.0.1:7443"
    token = "bmt_..."

Precedence, per setting: the ``--endpoint`` / ``--token`` / ``--token-file``
/ ``--ca`` flags, then the context named by ``--context``, then
``BMAAS_ENDPOINT`` / ``BMAAS_TOKEN`` / ``BMAAS_CA``, then the context named
by ``BMAAS_CONTEXT`` or ``current-context``.  ``ca`` is the region's CA
bundle (without one, the system's roots are trusted); ``--insecure``
(plaintext) ignores the CA of the environment and of contexts.
(``--context`` is a flag, so the context it names beats the environment; a
context only chosen by the file or ``BMAAS_CONTEXT`` does not.)  The file is
written with mode 0600 (it may hold tokens), atomically, as UTF-8 by
tomli-w, so any context name or value reads back as it was.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w

from bmctl import exitcodes
from bmctl.client import CliError

CONTEXT_KEYS = ("endpoint", "token", "token-file", "ca")


def config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("BMAAS_CONFIG"):
        return Path(env["BMAAS_CONFIG"])
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or Path.home()) / ".config")
    return Path(base) / "bmaas" / "config.toml"


@dataclass
class Config:
    path: Path
    current_context: str = ""
    contexts: dict[str, dict[str, str]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Config:
        """The file at *path*; an empty config when there is none."""
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return cls(path)
        except OSError as exc:
            raise CliError(f"config {path}: {exc.strerror}", exitcodes.USAGE) from exc
        try:
            data = tomllib.loads(raw.decode())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise CliError(f"config {path}: invalid TOML: {exc}", exitcodes.USAGE) from exc
        current = data.get("current-context", "")
        contexts = data.get("contexts", {})
        if not isinstance(current, str) or not isinstance(contexts, dict):
            raise CliError(
                f"config {path}: 'current-context' must be a string and 'contexts' a table",
                exitcodes.USAGE,
            )
        unknown = sorted(set(data) - {"current-context", "contexts"})
        if unknown:
            raise CliError(f"config {path}: unknown key {unknown[0]!r}", exitcodes.USAGE)
        out = cls(path, current)
        for name, ctx in contexts.items():
            if not isinstance(ctx, dict):
                raise CliError(f"config {path}: contexts.{name} must be a table", exitcodes.USAGE)
            for key, value in ctx.items():
                if key not in CONTEXT_KEYS:
                    raise CliError(
                        f"config {path}: contexts.{name}: unknown key {key!r} "
                        f"(expected {', '.join(CONTEXT_KEYS)})",
                        exitcodes.USAGE,
                    )
                if not isinstance(value, str):
                    raise CliError(
                        f"config {path}: contexts.{name}.{key} must be a string", exitcodes.USAGE
                    )
            out.contexts[name] = dict(ctx)
        return out

    def context(self, name: str) -> dict[str, str]:
        try:
            return self.contexts[name]
        except KeyError:
            known = ", ".join(sorted(self.contexts)) or "none"
            raise CliError(
                f"no context {name!r} in {self.path} (known: {known})", exitcodes.USAGE
            ) from None

    def dumps(self) -> str:
        """The file's text, written by tomli-w (any string round-trips: quotes,
        control characters, characters outside the BMP as themselves)."""
        data: dict[str, object] = {}
        if self.current_context:
            data["current-context"] = self.current_context
        data["contexts"] = {
            name: {k: ctx[k] for k in CONTEXT_KEYS if ctx.get(k)}
            for name, ctx in sorted(self.contexts.items())
        }
        return tomli_w.dumps(data)

    def save(self) -> None:
        """Write atomically, mode 0600 (the directory 0700 if bmctl creates it)."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), 0o600)
                f.write(self.dumps().encode())
            os.replace(tmp, self.path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise CliError(f"config {self.path}: {exc.strerror}", exitcodes.USAGE) from exc


@dataclass(frozen=True)
class Target:
    """What a command connects to, and where each part came from."""

    endpoint: str
    token: str
    context: str  # the context used, "" when none
    ca: str = ""  # the CA bundle to trust, "" for the system's roots


def resolve(
    *,
    endpoint: str,
    token: str,
    token_file: str,
    context: str,
    ca: str = "",
    env: Mapping[str, str] | None = None,
) -> Target:
    env = os.environ if env is None else env
    cfg = Config.load(config_path(env))
    explicit = bool(context)
    name = context or env.get("BMAAS_CONTEXT", "") or cfg.current_context
    ctx = cfg.context(name) if name else {}

    def ctx_token() -> str:
        if ctx.get("token"):
            return ctx["token"]
        if ctx.get("token-file"):
            return read_token_file(ctx["token-file"], f"context {name} token-file")
        return ""

    if not endpoint:
        if explicit and ctx.get("endpoint"):
            endpoint = ctx["endpoint"]
        else:
            endpoint = env.get("BMAAS_ENDPOINT", "") or ctx.get("endpoint", "")
    if token_file and not token:
        token = read_token_file(token_file, "--token-file")
    if not token:
        token = ctx_token() if explicit else ""
        token = token or env.get("BMAAS_TOKEN", "") or ctx_token()
    if not ca:
        if explicit and ctx.get("ca"):
            ca = ctx["ca"]
        else:
            ca = env.get("BMAAS_CA", "") or ctx.get("ca", "")
    return Target(endpoint, token, name, ca)


def read_token_file(path: str, what: str) -> str:
    try:
        text = Path(path).expanduser().read_text().strip()
    except OSError as exc:
        raise CliError(f"{what} {path}: {exc.strerror}", exitcodes.USAGE) from exc
    except UnicodeDecodeError as exc:
        raise CliError(f"{what} {path}: not text", exitcodes.USAGE) from exc
    if not text:
        raise CliError(f"{what} {path}: empty", exitcodes.USAGE)
    return text
