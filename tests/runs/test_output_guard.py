"""Nothing chestxr writes can delete or overwrite a run folder, a manifest or an input (issue 24.3): ``--out``
(and ``export``'s file and its sidecar, ``cache build --cache-dir``) equal to, inside, or (when it would be replaced)
containing any of them is refused with one line, exit 2, for every subcommand; nothing is touched."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from conftest import tiny_args

from chestxr.cli import main


def snapshot(root: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under ``root`` (or of ``root`` itself when it is a file)."""
    if root.is_file():
        return {root.name: hashlib.sha256(root.read_bytes()).hexdigest()}
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def refused(capsys, argv: list[str], *protected: Path, expect: str = "") -> str:
    before = {p: snapshot(p) for p in protected}
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("warning:")]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert expect in lines[0], lines[0]
    for p in protected:
        assert snapshot(p) == before[p], f"{p} changed"
    return lines[0]


@pytest.fixture()
def run(tiny_run_copy):
    return tiny_run_copy


@pytest.fixture()
def images(synth_manifest, tmp_path):
    """A private copy of a few input images."""
    folder = tmp_path / "images"
    folder.mkdir()
    for p in sorted((synth_manifest.parent / "images").glob("*.png"))[:3]:
        shutil.copy(p, folder / p.name)
    return folder


@pytest.mark.parametrize("target", ["model", "model.safetensors", "model.json", "last/x.pt"])
def test_export_file_into_the_run_is_refused(target, run, capsys):
    """--out RUN/model would write its sidecar over RUN/model.json; RUN/model.safetensors replaced the weights."""
    refused(capsys, ["export", "--checkpoint", str(run), "--out", str(run / target), "--overwrite"], run, expect="run")


def test_export_monai_bundle_over_the_run_is_refused(run, capsys):
    refused(
        capsys,
        ["export", "--checkpoint", str(run), "--format", "monai-bundle", "--out", str(run), "--overwrite"],
        run,
        expect="run",
    )


def test_predict_dicomweb_over_the_run_is_refused(run, tmp_path, capsys):
    pytest.importorskip("dicomweb_client")
    from dicomweb_fakes import FakeDicomWeb
    from pacs_helpers import synthetic_studies

    studies = synthetic_studies(tmp_path / "studies", n_images=3)
    with FakeDicomWeb(studies) as server:
        refused(
            capsys,
            ["predict", "--checkpoint", str(run), "--dicomweb", server.url, "--out", str(run), "--overwrite"],
            run,
            expect="run",
        )
        assert server.requests == []  # refused before any traffic


@pytest.mark.parametrize("sub", ["", "last", "eval-test"])
def test_predict_and_evaluate_into_the_run_are_refused(sub, run, images, synth_manifest, capsys):
    out = run / sub if sub else run
    refused(capsys, ["predict", "--checkpoint", str(run), str(images), "--out", str(out), "--overwrite"], run)
    refused(
        capsys,
        ["evaluate", "--checkpoint", str(run), "--manifest", str(synth_manifest), "--out", str(out), "--overwrite"],
        run,
    )


def test_card_and_listen_into_the_run_are_refused(run, capsys):
    refused(capsys, ["card", str(run), "--out", str(run), "--overwrite"], run, expect="run")
    refused(capsys, ["card", str(run), "--out", str(run / "card"), "--overwrite"], run, expect="run")
    refused(capsys, ["listen", "--checkpoint", str(run), "--out", str(run / "listen"), "--port", "11999"], run)


def test_out_holding_the_run_is_refused(run, images, capsys):
    """--out PARENT --overwrite would replace the folder that holds the run."""
    parent = run.parent / f"holder-{run.name}"
    parent.mkdir()
    moved = parent / "run"
    shutil.move(str(run), moved)
    refused(capsys, ["predict", "--checkpoint", str(moved), str(images), "--out", str(parent), "--overwrite"], moved)


def test_out_equal_to_or_inside_an_input_is_refused(run, images, capsys):
    refused(capsys, ["predict", "--checkpoint", str(run), str(images), "--out", str(images), "--overwrite"], images)
    refused(capsys, ["predict", "--checkpoint", str(run), str(images), "--out", str(images / "p")], images)
    one = next(images.glob("*.png"))
    refused(capsys, ["predict", "--checkpoint", str(run), str(one), "--out", str(one), "--overwrite"], images)


def test_out_holding_the_manifest_or_its_images_is_refused(run, synth_manifest, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(synth_manifest.parent, data)
    manifest = data / synth_manifest.name
    refused(
        capsys,
        ["evaluate", "--checkpoint", str(run), "--manifest", str(manifest), "--out", str(data), "--overwrite"],
        data,
    )
    refused(
        capsys,
        [
            "evaluate",
            "--checkpoint",
            str(run),
            "--manifest",
            str(manifest),
            "--out",
            str(data / "images"),
            "--overwrite",
        ],
        data,
    )


def test_manifest_commands_do_not_overwrite_their_input(synth_manifest, tmp_path, capsys):
    manifest = tmp_path / "m.csv"
    shutil.copy(synth_manifest, manifest)
    refused(capsys, ["manifest", "split", str(manifest), "--out", str(manifest), "--overwrite"], manifest)


def test_train_into_another_run_or_over_a_run_is_refused(run, synth_manifest, tmp_path, capsys):
    refused(
        capsys,
        ["train", "--manifest", str(synth_manifest), "--out", str(run / "sub"), *tiny_args()],
        run,
        expect="run",
    )
    refused(
        capsys,
        ["train", "--manifest", str(synth_manifest), "--out", str(run), "--overwrite", *tiny_args()],
        run,
        expect="run",
    )


def test_cache_dir_inside_the_run_is_refused(run, synth_manifest, capsys):
    refused(capsys, ["cache", "build", str(synth_manifest), "--cache-dir", str(run)], run, expect="run")


def test_demo_over_a_run_is_refused(run, capsys):
    refused(capsys, ["demo", "--out", str(run), "--overwrite"], run, expect="run")


def test_outputs_beside_the_run_still_work(run, images, tmp_path, capsys):
    code = main(["predict", "--checkpoint", str(run), str(images), "--out", str(tmp_path / "p"), "--workers", "0"])
    assert code == 0, capsys.readouterr().err
    code = main(["predict", "--checkpoint", str(run), str(images), "--out", str(tmp_path / "p"), "--overwrite"])
    assert code == 0, capsys.readouterr().err


def test_another_spelling_of_the_run_is_the_run(run, images, tmp_path, capsys):
    link = tmp_path / "link"
    link.symlink_to(run, target_is_directory=True)
    refused(capsys, ["predict", "--checkpoint", str(run), str(images), "--out", str(link / "p")], run, expect="run")
    dotted = run.parent / "x" / ".." / run.name / "p"
    refused(capsys, ["predict", "--checkpoint", str(run), str(images), "--out", str(dotted)], run, expect="run")


def test_the_python_api_refuses_too(run, tmp_path):
    from chestxr.core import ProtectedPathError
    from chestxr.runs import predict_run

    with pytest.raises(ProtectedPathError, match="run folder"):
        predict_run(run, run / "p", inputs=[str(tmp_path)], overwrite=True)


def test_demo_overwrite_replaces_a_folder_the_demo_made(tmp_path, capsys, monkeypatch):
    """`make demo` twice: --overwrite replaces a previous demo folder (marked, or laid out as the demo lays it
    out), not a run or any other folder; the old run goes with it (it is the demo's own)."""
    from chestxr.runs import DEMO_MARKER

    calls = []
    import chestxr.runs as runs

    def fake_train(config, *, out_dir, **kw):  # the demo's steps after the folder check are not under test here
        calls.append(out_dir)
        raise SystemExit(0)

    monkeypatch.setattr(runs, "train", fake_train)
    for marked in (True, False):
        demo = tmp_path / f"demo-{marked}"
        (demo / "run").mkdir(parents=True)
        (demo / "run" / "model.json").write_text("{}")
        (demo / "data").mkdir()
        (demo / "data" / "manifest_split.csv").write_text("x")
        if marked:
            (demo / DEMO_MARKER).write_text("")
        with pytest.raises(SystemExit):
            main(["demo", "--out", str(demo), "--overwrite", "--images", "40"])
        assert calls[-1] == demo / "run" and not (demo / "run" / "model.json").exists()
