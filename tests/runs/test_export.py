"""Export: TorchScript/ONNX files reproduce the eager model, carry their metadata, and refuse bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from chestxr.cli import main
from chestxr.core import CheckpointError, ChestXRError, OutputExistsError
from chestxr.runs import export_model, sidecar_path

# torch >= 2.10 marks torch.jit as deprecated; TorchScript files are still what many deployments load
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def run_dir(tiny_run):
    """The session's tiny multi-label run on 32 px synthetic X-rays (tests/conftest.py)."""
    return tiny_run


def _eager(run_dir, x):
    from chestxr.runs import load_model

    model, _ = load_model(run_dir)
    with torch.no_grad():
        return model(x).numpy()


def test_torchscript_matches_eager_for_any_batch(run_dir, tmp_path):
    out = export_model(run_dir, tmp_path / "model.pt", format="torchscript")
    assert out == tmp_path / "model.pt" and out.is_file()
    loaded = torch.jit.load(str(out))
    for n in (1, 5):
        x = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(n))
        with torch.no_grad():
            got = loaded(x).numpy()
        assert got.shape == (n, 4)
        np.testing.assert_allclose(got, _eager(run_dir, x), atol=1e-5, rtol=0)
    # only the model and its sidecar: no temp file left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "model.pt.json"]


def test_sidecar_describes_the_model(run_dir, tmp_path):
    out = export_model(run_dir, tmp_path / "m.pt", format="torchscript")
    side = json.loads(sidecar_path(out).read_text())
    meta = json.loads((run_dir / "model.json").read_text())
    assert side["format"] == "torchscript"
    assert side["findings"] == ["Opacity", "Cardiomegaly", "Effusion", "Nodule"]
    assert side["preprocessing"]["size"] == 32 and side["preprocessing"] == meta["preprocessing"]
    assert side["input"]["shape"] == ["batch", 3, 32, 32]
    assert side["output"]["shape"] == ["batch", 4]
    assert side["probability_thresholds"] == [0.5, 0.5, 0.5, 0.5]  # not calibrated yet
    assert side["source"]["weights_sha256"] == meta["weights_sha256"]
    assert 0.0 <= side["check"]["max_abs_diff"] <= 1e-4


def test_example_size_changes_the_traced_input(run_dir, tmp_path):
    out = export_model(run_dir, tmp_path / "m64.pt", example_size=64)
    side = json.loads(sidecar_path(out).read_text())
    assert side["input"]["shape"] == ["batch", 3, 64, 64]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        np.testing.assert_allclose(torch.jit.load(str(out))(x).numpy(), _eager(run_dir, x), atol=1e-5, rtol=0)


def test_failed_check_writes_nothing(run_dir, tmp_path):
    with pytest.raises(ChestXRError, match="differs from the eager model"):
        export_model(run_dir, tmp_path / "m.pt", atol=-1.0)  # no difference can pass
    assert list(tmp_path.iterdir()) == []


def test_refuses_existing_file_unless_overwrite(run_dir, tmp_path):
    target = tmp_path / "m.pt"
    target.write_bytes(b"old")
    with pytest.raises(OutputExistsError):
        export_model(run_dir, target)
    assert target.read_bytes() == b"old"
    export_model(run_dir, target, overwrite=True)
    assert torch.jit.load(str(target)) is not None


def test_bad_inputs(run_dir, tmp_path):
    with pytest.raises(CheckpointError):
        export_model(tmp_path / "no-run", tmp_path / "m.pt")
    with pytest.raises(ChestXRError, match="format"):
        export_model(run_dir, tmp_path / "m.pt", format="tflite")  # type: ignore[arg-type]


def test_cli_export(run_dir, tmp_path, capsys):
    out = tmp_path / "cli.pt"
    assert main(["export", "--checkpoint", str(run_dir), "--format", "torchscript", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "max |exported - eager|" in printed
    assert out.is_file() and sidecar_path(out).is_file()
    # again without --overwrite: a one-line error, exit 2
    assert main(["export", "--checkpoint", str(run_dir), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["export", "--checkpoint", str(tmp_path / "missing"), "--out", str(tmp_path / "x.pt")]) == 2


def test_onnx_matches_eager_with_dynamic_batch(run_dir, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    out = export_model(run_dir, tmp_path / "model.onnx", format="onnx")
    side = json.loads(sidecar_path(out).read_text())
    assert side["format"] == "onnx" and side["opset"] == 17
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    for n in (1, 6):
        x = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(10 + n))
        got = session.run(None, {"image": x.numpy()})[0]
        assert got.shape == (n, 4)
        np.testing.assert_allclose(got, _eager(run_dir, x), atol=1e-4, rtol=0)
