"""The command line: every subcommand has --help; errors are one readable line and exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from chestxr.cli import build_parser, main

SUBCOMMANDS = ["demo", "train", "calibrate", "evaluate", "predict", "manifest", "cache", "export"]


def test_all_subcommands_registered():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in SUBCOMMANDS:
        assert name in sub.choices, name


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_help_for_each_subcommand(name, capsys):
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    assert "usage: chestxr " + name in capsys.readouterr().out


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "chestxr", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("chestxr ")


def test_user_error_is_one_line_exit_2(tmp_path, capsys):
    code = main(
        ["train", "--manifest", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "r"), "--set", "train.epochs=1"]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "missing.csv" in err and "Traceback" not in err


def test_bad_override_exit_2(capsys):
    assert main(["train", "--set", "train.nope=1"]) == 2
    assert "unknown key" in capsys.readouterr().err


def test_public_api_is_lazy_and_complete():
    code = (
        "import sys, chestxr; assert 'torch' not in sys.modules; "
        "[getattr(chestxr, n) for n in chestxr.__all__]; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
