"""The command line explains itself and reports errors on one line."""

from __future__ import annotations

import pytest

from tuner.cli import build_parser, main


def test_help_lists_every_command(tuner_cli):
    out = tuner_cli("--help", check=True).stdout
    for action in build_parser()._subparsers._group_actions[0].choices:
        assert action in out


@pytest.mark.parametrize("command", sorted(build_parser()._subparsers._group_actions[0].choices))
def test_each_command_help_has_an_example(tuner_cli, command):
    out = tuner_cli(command, "--help", check=True).stdout
    assert "examples:" in out
    assert max(len(line) for line in out.splitlines()) <= 80


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "commands" in capsys.readouterr().out


def test_unknown_option_is_a_usage_error(tuner_cli):
    proc = tuner_cli("doctor", "--no-such-option")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
