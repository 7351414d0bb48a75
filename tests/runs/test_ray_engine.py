"""--engine ray on a local Ray (2 CPUs, one module-wide session): the same probabilities and the same skipped
images as plain predict, resumable after a job stops midway, and a chestxr.Run inside a Ray actor.
Skips cleanly without Ray (extra ``ray``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

from chestxr.imaging import LoaderOptions  # noqa: E402
from chestxr.runs import Run  # noqa: E402
from chestxr.runs._ray_predict import RayOptions, decide_calls, score_with_ray  # noqa: E402
from chestxr.runs._result_store import ResultStore  # noqa: E402

pytestmark = pytest.mark.slow  # a local Ray takes seconds to start
OPTS = RayOptions(actors=1, batch_size=8, part_rows=8)


@pytest.fixture(scope="module")
def ray_session():
    from pathlib import Path as _P

    import chestxr

    ray.init(
        num_cpus=2,
        object_store_memory=150 * 2**20,
        include_dashboard=False,
        runtime_env={"py_modules": [str(_P(chestxr.__file__).parent)]},
    )
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def images(synth_manifest, tmp_path_factory) -> list[str]:
    """The session's 60 synthetic images (PNG and DICOM), one byte-identical copy, and two bad files."""
    folder = tmp_path_factory.mktemp("ray-inputs")
    paths = [str(synth_manifest.parent / p) for p in pd.read_csv(synth_manifest)["path"]]
    shutil.copy(paths[0], folder / ("copy" + Path(paths[0]).suffix))
    (folder / "garbage.png").write_bytes(b"not a png at all")
    np_blank = np.zeros((64, 64), np.uint8)
    from PIL import Image

    Image.fromarray(np_blank).save(folder / "blank.png")  # constant: carries no picture
    return paths + [str(folder / n) for n in sorted(p.name for p in folder.iterdir())]


def test_same_numbers_and_skips_as_plain_predict(ray_session, tiny_run, images, tmp_path):
    run = Run.load(tiny_run, device="cpu")
    plain = run.predict(images, loading=LoaderOptions(batch_size=8, num_workers=0, on_bad_image="skip"))
    got = score_with_ray(run, images, store_dir=tmp_path / "store", options=OPTS, progress=False)
    assert np.array_equal(got.ok, plain.ok)
    diff = np.abs(got.scores[got.ok] - plain.scores[plain.ok]).max()
    assert diff < 1e-6, diff
    assert [(images[i], r) for i, r in got.skipped] == plain.skipped  # same files, same reasons
    assert len(got.skipped) == 2
    assert got.computed == len(set(got.image_sha256)) == len(images) - 1  # the copy is scored once
    assert got.reused == 0
    # the calls stored by the actors are the run's calls at its thresholds
    held = ResultStore(
        tmp_path / "store", model_sha=got.model_sha256, thresholds_sha=got.thresholds_sha256, findings=run.findings
    ).load()
    calls = held.loc[[s for s, ok in zip(got.image_sha256, got.ok) if ok], [f"call_{f}" for f in run.findings]]
    assert np.array_equal(calls.to_numpy() == "positive", plain.calls[plain.ok])
    assert np.array_equal(
        calls.to_numpy(), decide_calls(got.scores[got.ok], run.thresholds, task=run.task, abstain=False)
    )


def test_stopped_job_resumes_with_only_what_is_missing(ray_session, tiny_run, images, tmp_path):
    run = Run.load(tiny_run, device="cpu")
    store = tmp_path / "store"

    class Stop(Exception):
        pass

    def stop_after_first_part(stored: int) -> None:
        raise Stop(stored)

    with pytest.raises(Stop) as stopped:
        score_with_ray(run, images, store_dir=store, options=OPTS, on_part=stop_after_first_part, progress=False)
    first = stopped.value.args[0]
    distinct = len(images) - 1
    assert 0 < first < distinct
    resumed = score_with_ray(run, images, store_dir=store, options=OPTS, progress=False)
    assert (resumed.reused, resumed.computed) == (first, distinct - first)
    again = score_with_ray(run, images, store_dir=store, options=OPTS, progress=False)
    assert (again.reused, again.computed) == (distinct, 0)
    rows = pd.concat([pd.read_parquet(p) for p in sorted(store.rglob("part-*.parquet"))])
    assert len(rows) == distinct and rows["image_sha256"].is_unique  # no row written twice
    plain = run.predict(images, loading=LoaderOptions(batch_size=8, num_workers=0, on_bad_image="skip"))
    assert np.abs(again.scores[again.ok] - plain.scores[plain.ok]).max() < 1e-6


def test_two_actors_same_numbers(ray_session, tiny_run, images, tmp_path):
    run = Run.load(tiny_run, device="cpu")
    two = RayOptions(actors=2, cpus_per_actor=0.5, batch_size=8, part_rows=8)
    got = score_with_ray(run, images[:24], store_dir=tmp_path / "store", options=two, progress=False)
    plain = run.scores(images[:24], loading=LoaderOptions(batch_size=8, num_workers=0))
    assert np.abs(got.scores - plain).max() < 1e-6


def test_run_inside_a_ray_actor_without_the_cli(ray_session, tiny_run, images):
    from chestxr.runs._packed_run import load_packed, pack_run

    @ray.remote
    class Scorer:
        def __init__(self, packed):
            self.run = load_packed(packed, device="cpu")  # no shared disk: the bytes came through Ray

        def scores(self, paths):
            return self.run.scores(paths, loading=LoaderOptions(num_workers=0, on_bad_image="skip"))

    scorer = Scorer.remote(ray.put(pack_run(tiny_run)))  # a top-level ref arrives as the PackedRun
    got = ray.get(scorer.scores.remote(images[:10]))
    assert np.array_equal(got, Run.load(tiny_run, device="cpu").scores(images[:10]))
