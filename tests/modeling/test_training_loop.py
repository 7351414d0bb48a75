"""The training loop is one module that writes no file (issue 21.1 / 21.5): fit() takes an options object and
reports to a Recorder; here an in-memory one, where chestxr.runs.train's recorder writes the run folder."""

from __future__ import annotations

import inspect

from conftest import tiny_config

from chestxr.data import load_training_splits
from chestxr.modeling import FitOptions, Resumed, fit


class MemoryRecorder:
    def __init__(self) -> None:
        self.best: list[int] = []
        self.epochs: list[int] = []
        self.finished = False

    def resume(self, model, optimizer, scheduler) -> Resumed:  # noqa: ANN001
        raise AssertionError("not resuming")

    def best_weights(self):
        return None

    def save_best(self, model, *, epoch, val_mean_auroc, per_member) -> None:  # noqa: ANN001
        self.best.append(epoch)

    def end_epoch(self, epoch, *, model, optimizer, scheduler, history, best, ema, skipped) -> None:  # noqa: ANN001
        self.epochs.append(epoch)
        assert len(history) == epoch + 1 and history[-1]["epoch"] == epoch + 1

    def finish(self, model) -> None:  # noqa: ANN001
        self.finished = True


def test_fit_reports_every_epoch_to_its_recorder_and_writes_nothing(synth_manifest, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tiny_config(synth_manifest, "train.epochs=2")
    splits = load_training_splits(config)
    rec, lines = MemoryRecorder(), []
    result = fit(config, splits["train"], splits["val"], rec, FitOptions(log=lines.append))
    assert rec.epochs == [0, 1] and rec.finished and result.epochs_run == 2 and len(result.history) == 2
    assert rec.best and rec.best[-1] == result.best_epoch
    assert [ln.split(":")[0] for ln in lines] == ["epoch 1/2", "epoch 2/2"]
    assert list(tmp_path.iterdir()) == []  # no file written by the loop itself
    params = inspect.signature(fit).parameters
    assert list(params) == ["config", "train_set", "val_set", "recorder", "options"]
