"""Odd option and file values are refused with one line naming them (issue 24.6), not a traceback or a run that
silently never works."""

from __future__ import annotations

import pytest
from conftest import tiny_args

from chestxr.cli import main


@pytest.mark.parametrize(
    "argv",
    [
        ["demo", "--out", "OUT"],
        ["calibrate", "--checkpoint", "r", "--manifest", "m.csv"],
        ["evaluate", "--checkpoint", "r", "--manifest", "m.csv", "--out", "OUT"],
        ["manifest", "split", "m.csv", "--val", "0.1", "--test", "0.2", "--out", "OUT"],
    ],
    ids=lambda a: " ".join(a[:2]),
)
@pytest.mark.parametrize("seed", ["-1", "4294967296"])
def test_seed_outside_numpy_range_is_one_line(argv, seed, tmp_path, capsys):
    argv = [str(tmp_path / "o") if a == "OUT" else a for a in argv]
    with pytest.raises(SystemExit) as info:
        main([*argv, "--seed", seed])
    assert info.value.code == 2
    err = capsys.readouterr().err
    line = err.strip().splitlines()[-1]
    assert f"argument --seed: {seed} is out of range; allowed: in [0, 4294967295]" in line, err
    assert "Traceback" not in err and not (tmp_path / "o").exists()


def test_config_seed_minus_one_is_one_line(synth_manifest, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--manifest", str(synth_manifest), "--out", str(out), *tiny_args("seed=-1")])
    err = capsys.readouterr().err
    assert code == 2 and "seed: -1 is out of range; allowed: in [0, 4294967295]" in err and "Traceback" not in err
    assert not (out / "model.safetensors").exists()
