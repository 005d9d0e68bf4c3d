"""The argparse tree as completion sees it (the scripts themselves are run
by real shells in tests/integration/bmctl/test_completion.py)."""

from __future__ import annotations

from bmctl import main as cli
from bmctl.local import bash_script, commands_of, walk, zsh_script


def test_walk_sees_nouns_verbs_options_and_choices() -> None:
    parser = cli.build_parser()
    nodes = {n.path: n for n in walk(parser)}
    assert "instance" in [c for c, _ in nodes[""].commands]
    assert nodes[""].values["-o"] == ["table", "json", "yaml"]
    assert nodes["host enroll"].values["--power-driver"] == ["qemu", "fake"]
    assert nodes["instance create"].values["--user-data-file"] is None  # a file
    assert "--wait" in [o for o, _ in nodes["instance create"].options]
    assert nodes["host maintenance"].positional == ["on", "off"]
    pairs = commands_of(parser)
    assert ("volume", "resize") in pairs and ("config", "use-context") in pairs
    assert len(pairs) == len(set(pairs))


def test_scripts_name_every_command() -> None:
    parser = cli.build_parser()
    bash, zsh = bash_script(parser), zsh_script(parser)
    for noun, verb in commands_of(parser):
        assert f'"{noun} {verb}")' in bash and f'"{noun} {verb}")' in zsh
    assert bash.rstrip().endswith("complete -F _bmctl bmctl")
    assert zsh.startswith("#compdef bmctl")
