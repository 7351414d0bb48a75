"""Presets travel with the package: a wheel (and a wheel built from the sdist) carries configs/*.yaml as
``chestxr.presets``; installed into a fresh venv outside the repository, ``chestxr presets`` lists every
preset and ``chestxr train --config nih14-fast`` trains from a working directory with no configs/ folder."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

from chestxr.core import list_presets, load_config

REPO = Path(__file__).resolve().parent.parent
PRESETS = sorted(p.stem for p in (REPO / "configs").glob("*.yaml"))


def test_presets_listed_with_descriptions_from_the_repository(capsys):
    from chestxr.cli import main

    found = {p.name: p for p in list_presets()}
    assert sorted(found) == PRESETS
    assert all(p.description and not p.description.startswith("#") for p in found.values())
    assert main(["presets"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == PRESETS
    assert main(["presets", "demo"]) == 0
    assert "backbone: smallcnn" in capsys.readouterr().out


def test_unknown_preset_names_the_available_ones():
    from chestxr.core import ConfigError

    with pytest.raises(ConfigError, match=r"no config file or preset named 'nih15'.*nih14-fast.*chestxr presets"):
        load_config("nih15")


def test_configs_in_the_working_directory_come_first(tmp_path, monkeypatch):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "demo.yaml").write_text("# my demo\nname: mine\n")
    monkeypatch.chdir(tmp_path)
    assert load_config("demo").name == "mine"
    assert {p.name: p.description for p in list_presets()}["demo"] == "my demo"


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS="1", CHESTXR_NO_PROGRESS="1", **extra)
    return env


def _fresh_venv(root: Path) -> Path:
    """A venv without pip whose site-packages also sees this interpreter's (torch, numpy, pip ...),
    so nothing is downloaded; the wheel installed into it comes first on sys.path."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    py = root / "bin" / "python"
    site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(site, "_chestxr_test_base.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return py


def _build(kind: str, out: Path) -> Path:
    code = f"from setuptools import build_meta as b; print(b.build_{kind}({str(out)!r}))"
    name = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True, text=True, env=_clean_env()
    ).stdout.split()[-1]
    return out / name


@pytest.mark.slow
def test_wheel_install_lists_and_trains_a_preset(tmp_path):
    from chestxr.data import generate_synthetic_dataset

    # the sdist carries configs/, and a wheel built from it carries the presets
    sdist = _build("sdist", tmp_path / "dist")
    with tarfile.open(sdist) as tar:
        names = tar.getnames()
    assert {n.split("/configs/")[-1][:-5] for n in names if "/configs/" in n and n.endswith(".yaml")} == set(PRESETS)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path / "w"),
            str(sdist),
        ],
        check=True,
        env=_clean_env(),
        cwd=tmp_path,
    )
    wheel = next((tmp_path / "w").glob("chestxr-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        shipped = sorted(Path(n).stem for n in z.namelist() if n.startswith("chestxr/presets/"))
    assert shipped == PRESETS
    assert not any(n.startswith("configs/") for n in z.namelist())

    py = _fresh_venv(tmp_path / "venv")
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True, env=_clean_env())
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = _clean_env()
    where = subprocess.run(
        [str(py), "-c", "import chestxr; print(chestxr.__file__)"], cwd=work, env=env, capture_output=True, text=True
    )
    assert Path(where.stdout.strip()).is_relative_to(tmp_path / "venv"), where
    chestxr_bin = tmp_path / "venv" / "bin" / "chestxr"
    listed = subprocess.run([str(chestxr_bin), "presets"], cwd=work, env=env, capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()] == PRESETS

    manifest = generate_synthetic_dataset(work / "data", n_images=24, seed=0, size=48, with_split=True)
    overrides = [
        "data.findings=[Opacity, Cardiomegaly, Effusion, Nodule]",
        "data.num_workers=0",
        "preprocessing.size=32",
        "preprocessing.cache_size=48",
        "train.epochs=1",
        "train.batch_size=8",
        "train.ema_decay=null",
    ]
    cmd = [str(chestxr_bin), "train", "--config", "nih14-fast", "--manifest", str(manifest), "--out", "run"]
    for o in overrides:
        cmd += ["--set", o]
    trained = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert (work / "run" / "model.safetensors").is_file()
    resolved = (work / "run" / "config.yaml").read_text()
    assert "name: nih14-fast" in resolved and "backbone: tiny" in resolved
