"""``chestxr export --format monai-bundle``: a MONAI Bundle that MONAI's own loaders accept offline -
ConfigParser, monai.bundle.load (TorchScript + embedded metadata), verify_net_in_out, and the
ConfigWorkflow "infer" run - and whose preprocessing + network reproduce chestxr's scores."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from chestxr.cli import main
from chestxr.core import OutputExistsError, config_from_dict

monai = pytest.importorskip("monai")
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning", "ignore::UserWarning")
FINDINGS = ["Opacity", "Cardiomegaly", "Effusion", "Nodule"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(run folder, folder of 8-bit PNG test images): a tiny model, 3 epochs on 48 px synthetic X-rays."""
    from PIL import Image

    from chestxr.data import generate_synthetic_dataset
    from chestxr.runs import train

    root = tmp_path_factory.mktemp("bundle")
    manifest = generate_synthetic_dataset(root / "data", n_images=32, seed=4, size=64, dicom_fraction=0.0)
    cfg = config_from_dict(
        {
            "name": "b",
            "data": {"manifest": str(manifest), "num_workers": 0},
            "preprocessing": {"size": 32, "cache_size": 64},
            "model": {"backbone": "tiny"},
            "train": {"epochs": 3, "batch_size": 8, "lr": 0.003},
        }
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHESTXR_NO_PROGRESS", "1")
        run = train(cfg, out_dir=root / "run", log=lambda s: None).run_dir
    pngs = root / "pngs"
    pngs.mkdir()
    for p in sorted((root / "data" / "images").glob("*.png")):
        if Image.open(p).mode == "L":  # 8-bit: image_max 255
            shutil.copy(p, pngs / p.name)
    assert len(list(pngs.iterdir())) >= 5
    return run, pngs


@pytest.fixture(scope="module")
def bundle(trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("b") / "chestxr_bundle"
    assert main(["export", "--checkpoint", str(trained[0]), "--format", "monai-bundle", "--out", str(out)]) == 0
    return out


def test_layout_and_metadata(bundle, trained):
    assert (bundle / "models" / "model.ts").is_file() and (bundle / "docs" / "README.md").is_file()
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    run_meta = json.loads((trained[0] / "model.json").read_text())
    fmt = meta["network_data_format"]
    assert fmt["inputs"]["image"]["spatial_shape"] == [32, 32] and fmt["inputs"]["image"]["num_channels"] == 3
    assert fmt["outputs"]["pred"]["channel_def"] == {str(i): f for i, f in enumerate(FINDINGS)}
    assert meta["chestxr"]["findings"] == FINDINGS
    assert meta["chestxr"]["preprocessing"] == run_meta["preprocessing"]
    assert meta["chestxr"]["probability_thresholds"] == [0.5] * 4  # not calibrated yet
    assert meta["chestxr"]["check"]["max_abs_diff"] <= 1e-4
    assert {"version", "monai_version", "pytorch_version", "numpy_version"} <= set(meta)


def test_monai_loaders_accept_it_offline(bundle):
    from monai.bundle import ConfigParser, load, verify_net_in_out

    net, meta, extra = load(
        name=bundle.name, bundle_dir=bundle.parent, load_ts_module=True, device="cpu", config_files=("inference.json",)
    )
    assert meta["network_data_format"]["outputs"]["pred"]["num_channels"] == 4
    assert json.loads(extra["inference.json"])["network_def"]["_target_"] == "torch.jit.load"
    with torch.no_grad():
        assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 4)

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser.read_meta(str(bundle / "configs" / "metadata.json"))
    parser["bundle_root"] = str(bundle)
    assert isinstance(parser.get_parsed_content("network_def"), torch.jit.ScriptModule)
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(bundle / "configs" / "metadata.json"),
        config_file=str(bundle / "configs" / "inference.json"),
        device="cpu",
        bundle_root=str(bundle),
    )


def test_bundle_inference_reproduces_chestxr_scores(bundle, trained):
    from monai.bundle import ConfigParser, ConfigWorkflow

    from chestxr.runs import Run

    run_dir, pngs = trained
    files = sorted(str(p) for p in pngs.iterdir())
    expected = Run.load(run_dir, device="cpu").scores(files)

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    pre = parser.get_parsed_content("preprocessing")
    post = parser.get_parsed_content("postprocessing")
    net = parser.get_parsed_content("network")
    got = []
    with torch.no_grad():
        for f in files:
            x = pre({"image": f})["image"]
            assert tuple(x.shape) == (3, 32, 32)
            got.append(post({"pred": net(x[None])[0]})["pred"].numpy())
    got = np.stack(got)
    # MONAI's antialiased resize is not bit-identical to torch's; a transposed or mis-normalized image
    # would be off by far more than this
    assert np.abs(got - expected).max() < 0.02, np.abs(got - expected).max()

    wf = ConfigWorkflow(
        config_file=str(bundle / "configs" / "inference.json"),
        meta_file=str(bundle / "configs" / "metadata.json"),
        workflow_type="infer",
        bundle_root=str(bundle),
        dataset_dir=str(pngs),
    )
    wf.initialize()
    assert not wf.check_properties()
    wf.run()
    assert wf.evaluator.state.iteration == -(-len(files) // 8)
    wf.finalize()


def test_existing_bundle_needs_overwrite(bundle, trained):
    from chestxr.runs import export_monai_bundle

    with pytest.raises(OutputExistsError, match="--overwrite"):
        export_monai_bundle(trained[0], bundle)
    assert export_monai_bundle(trained[0], bundle, overwrite=True) == bundle
    assert not [p for p in bundle.parent.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_missing_monai_is_a_clear_error(monkeypatch, trained, tmp_path):
    import sys

    from chestxr.core import ChestXRError
    from chestxr.runs import export_monai_bundle

    monkeypatch.setitem(sys.modules, "monai", None)
    with pytest.raises(ChestXRError, match=r"pip install 'chestxr\[monai\]'"):
        export_monai_bundle(trained[0], tmp_path / "b")
    assert not Path(tmp_path / "b").exists()
