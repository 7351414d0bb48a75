"""The README's Spark recipe (a pandas UDF scoring images with chestxr.load_packed) runs as written and gives
Run.scores' numbers. Only where pyspark and a Java runtime are installed: chestxr does not depend on Spark."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]


def recipe() -> str:
    text = (REPO / "README.md").read_text()
    found = re.search(r"<!-- spark-recipe -->\n```python\n(.*?)```", text, flags=re.S)
    assert found, "README lost its Spark recipe"
    return found.group(1)


def test_recipe_is_short_and_uses_the_public_api():
    code = recipe()
    assert len(code.strip().splitlines()) <= 16
    assert "chestxr.pack_run(" in code and "chestxr.load_packed(" in code
    compile(code, "README spark recipe", "exec")


@pytest.mark.slow
def test_recipe_runs(tiny_run, synth_manifest, tmp_path, monkeypatch):
    pytest.importorskip("pyspark")
    if shutil.which("java") is None:
        pytest.skip("pyspark needs a Java runtime")
    frame = pd.read_csv(synth_manifest)
    frame["path"] = [str(synth_manifest.parent / p) for p in frame["path"]]
    frame[["path"]].head(12).to_csv(tmp_path / "manifest.csv", index=False)
    monkeypatch.chdir(tmp_path)
    code = recipe().replace('"runs/nih"', repr(str(tiny_run)))
    exec(compile(code, "README spark recipe", "exec"), {})
    got = pd.read_parquet(tmp_path / "scored.parquet").sort_values("path")
    import chestxr

    want = chestxr.Run.load(tiny_run, device="cpu").scores(got["path"].tolist())
    assert np.abs(np.stack(got["prob"].to_numpy()) - want).max() < 1e-6
