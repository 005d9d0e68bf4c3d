"""The completion scripts in real shells: bash's completion function driven
through COMP_WORDS/COMP_CWORD (COMPREPLY checked), and the zsh script loaded
by a real zsh after compinit, its ``_bmctl`` run with the completion
builtins it calls recorded."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.integration.bmctl.conftest import Bmctl, covers

CASES = [
    ([""], "host tenant token quota instance-type image instance volume vpc subnet nic"),
    (["ho"], "host"),
    (["host", ""], "enroll list get cordon uncordon drain decommission maintenance"),
    (["host", "enroll", "--power-driver", ""], "qemu fake"),
    (["-o", ""], "table json yaml"),
    (["--endpoint", "h:1", "-o", "json", "volume", "re"], "resize"),
    (["instance", "create", "--w"], "--wait"),
    (["instance", "stop", "i", "--ti"], "--timeout"),
    (["host", "maintenance", "h1", ""], "on off"),
    (["completion", ""], "bash zsh"),
    (["config", "set-context", "x", "--tok"], "--token --token-file"),
]


def script(bmctl: Bmctl, shell: str, tmp_path: Path) -> Path:
    got = bmctl("completion", shell)
    assert got.err == "" and got.out.startswith(("# bash", "#compdef"))
    path = tmp_path / f"bmctl.{shell}"
    path.write_text(got.out)
    return path


@covers("completion bash")
def test_bash_completion(bmctl: Bmctl, tmp_path: Path) -> None:
    path = script(bmctl, "bash", tmp_path)
    lines = [f"source {path}"]
    for words, _ in CASES:
        quoted = " ".join(f"'{w}'" for w in ["bmctl", *words])
        lines += [
            f"COMP_WORDS=({quoted}); COMP_CWORD={len(words)}; COMPREPLY=()",
            '_bmctl; echo "${COMPREPLY[*]}"',
        ]
    lines.append("complete -p bmctl")
    done = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", "\n".join(lines)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    out = done.stdout.splitlines()
    for (words, want), got in zip(CASES, out, strict=False):
        assert got.split()[: len(want.split())] == want.split(), words
    assert out[-1] == "complete -F _bmctl bmctl"
    # a file option completes file names
    (tmp_path / "user-data.yaml").write_text("")
    done = subprocess.run(
        [
            "bash",
            "--norc",
            "-c",
            f"source {path}; COMP_WORDS=(bmctl instance create "
            f"--user-data-file {tmp_path}/user-); COMP_CWORD=4; _bmctl; echo ${{COMPREPLY[*]}}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert done.stdout.strip() == f"{tmp_path}/user-data.yaml"


@covers("completion zsh")
def test_zsh_completion_loads_and_completes(bmctl: Bmctl, tmp_path: Path) -> None:
    path = script(bmctl, "zsh", tmp_path)
    lines = [
        "autoload -U compinit; compinit -u -d " + str(tmp_path / "zcompdump"),
        f"source {path} || exit 9",
        'print -r -- "registered: ${_comps[bmctl]}"',
        # record what _bmctl offers instead of showing it
        '_describe() { print -r -- "${(j: :)${(@)${(@P)${@[-1]}}%%:*}}" }',
        'compadd() { while [[ $1 != -- ]]; do shift; done; shift; print -r -- "$*" }',
    ]
    for words, _ in CASES:
        quoted = " ".join(f"'{w}'" for w in ["bmctl", *words])
        lines.append(f"words=({quoted}); CURRENT={len(words) + 1}; _bmctl")
    done = subprocess.run(
        ["zsh", "-f", "-c", "\n".join(lines)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    out = done.stdout.splitlines()
    assert out[0] == "registered: _bmctl"
    for (words, want), got in zip(CASES, out[1:], strict=True):
        # zsh filters by the typed prefix itself: _bmctl offers the candidates
        assert set(want.split()) <= set(got.split()), words
