"""Every command: reachable as `signkit ...` and `python -m ...`, help on every flag, examples kept line by line."""

from __future__ import annotations

import argparse
import importlib
import shlex
import subprocess
import sys

import pytest

from runtime import commands
from runtime.commands import COMMANDS, Command


def _module(cmd: Command):
    return importlib.import_module(cmd.module + (".__main__" if cmd.module in ("train", "camera_demo") else ""))


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c.words))
def test_every_command_explains_every_flag_and_keeps_its_examples(cmd):
    parser = _module(cmd).build_parser()
    text = parser.format_help()
    assert "(default: None)" not in text and "(default: False)" not in text
    examples = text.split("example")[-1].splitlines()[1:]
    assert examples and all(line.startswith("  python -m ") for line in examples if line.strip()), text
    assert (parser.description or "").splitlines()[0] == cmd.summary  # what `signkit --help` says of it
    silent = [a.option_strings for a in parser._actions
              if a.option_strings and not isinstance(a, argparse._HelpAction) and not (a.help or "").strip()]
    assert not silent, f"{cmd.module}: flags without help: {silent}"
    assert "../shared" not in text  # examples use paths a user has
    for line in (line for line in examples if line.strip()):  # each example's flags are this command's flags
        words = shlex.split(line.split("#")[0])[3:]
        words = words[:words.index(">")] if ">" in words else words  # a shell redirection is not the command's
        try:
            parser.parse_args(words)
        except SystemExit:
            pytest.fail(f"{cmd.module}: the example does not parse: {line.strip()}")


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c.words))
def test_signkit_runs_each_commands_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        commands.main([*cmd.words, "--help"])
    assert e.value.code == 0
    assert cmd.summary.split("(")[0].strip() in " ".join(capsys.readouterr().out.split())


def test_signkit_help_lists_every_command_and_refuses_an_unknown_one(capsys):
    assert commands.main(["--help"]) == 0
    out = capsys.readouterr().out
    for cmd in COMMANDS:
        assert f"  {' '.join(cmd.words)} " in out and cmd.module in out
    assert commands.main(["tarin"]) == 2
    assert "unknown command 'tarin'" in capsys.readouterr().err
    assert commands.find(["export", "tflite", "--int8"]) == (commands.COMMANDS[[c.module for c in COMMANDS].index("export.tflite")],
                                                             ["--int8"])
    assert commands.find(["train", "--epochs", "3"])[0].module == "train"  # a flag, not a sub-command word


def test_the_installed_console_script_is_the_same_command():
    code = "from runtime.commands import main; raise SystemExit(main(['export', 'onnx', '--help']))"
    script = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    module = subprocess.run([sys.executable, "-m", "export.onnx", "--help"], capture_output=True, text=True, timeout=120, check=False)
    assert script.returncode == module.returncode == 0 and script.stdout == module.stdout


def test_no_flag_that_does_nothing():
    """--io-dtype shapes only the TFLite int8 build: the ONNX command does not offer it."""
    onnx = importlib.import_module("export.onnx").build_parser().format_help()
    tflite = importlib.import_module("export.tflite").build_parser().format_help()
    assert "--io-dtype" not in onnx and "--io-dtype" in tflite


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c.words))
def test_no_default_output_lies_inside_the_package(cmd):
    from pathlib import Path

    from tests.fixtures import REPO

    packages = [REPO / name for name in ("runtime", "train", "export", "bench", "camera_demo")]
    for action in _module(cmd).build_parser()._actions:
        if isinstance(action.default, Path):
            where = (REPO / action.default).resolve()
            assert not any(where.is_relative_to(p) for p in packages), f"{cmd.module} {action.option_strings} -> {where}"
