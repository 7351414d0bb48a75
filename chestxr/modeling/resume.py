"""``train --resume`` refuses a changed recipe.

A resumed run must train the same model on the same data as the run it continues. Before resuming,
the resolved config is compared key by key with the run's ``config.yaml``, and the hashes of the
train and val rows with those recorded in ``last/state.json`` (``manifest_hashes``; older runs: the
training hash in model.json). Any difference outside :data:`MAY_CHANGE` is refused with the list of
differing keys (run value -> new value). ``data.manifest`` may point to another path when the rows
are the same (a moved file); changed rows are refused whatever the path.

Keys that may change on resume (:data:`MAY_CHANGE`): ``train.epochs`` (train to a new total; the LR
schedule restored from last/ keeps its original length), ``train.max_minutes``,
``train.early_stopping_patience``, ``train.threads``, ``train.device``, ``train.tensorboard``,
``data.num_workers``, ``data.cache_dir``, ``data.manifest`` (path only, see above) and ``name``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from chestxr.core.errors import CheckpointError

MAY_CHANGE = (
    "name",
    "train.epochs",
    "train.max_minutes",
    "train.early_stopping_patience",
    "train.threads",
    "train.device",
    "train.tensorboard",
    "data.num_workers",
    "data.cache_dir",
    "data.manifest",
)


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: d}


def recipe_differences(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, old value, new value) for every dotted key whose value differs and that may not change."""
    a, b = _flatten(old), _flatten(new)
    keys = sorted(set(a) | set(b))
    return [(k, a.get(k), b.get(k)) for k in keys if a.get(k) != b.get(k) and k not in MAY_CHANGE]


def check_resume_recipe(
    run_dir: Path, config: Any, *, manifest_hashes: dict[str, str], recorded: Optional[dict[str, str]]
) -> None:
    """CheckpointError listing what differs between the run's recipe and the resumed one.

    config: the resolved Config of the resumed run; manifest_hashes: {"train": h, "val": h} of the rows
    it would train on; recorded: the hashes saved with the run (None when the run predates them).
    """
    import yaml

    from chestxr.core.config import config_to_dict

    path = Path(run_dir) / "config.yaml"
    try:
        old = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise CheckpointError(f"{path}: cannot read the run's recipe ({exc}); cannot check --resume") from None
    # compare resolved with resolved: the old file went through the same defaults when it was written
    diffs = [f"{k} (run: {a!r}, now: {b!r})" for k, a, b in recipe_differences(old, config_to_dict(config))]
    for split, h in sorted(manifest_hashes.items()):
        if recorded and recorded.get(split) and recorded[split] != h:
            diffs.append(f"the {split} rows of data.manifest (sha256 {recorded[split][:12]}... -> {h[:12]}...)")
    if diffs:
        raise CheckpointError(
            f"{run_dir}: --resume with another recipe: {'; '.join(diffs)}. Only {', '.join(MAY_CHANGE)} may "
            "change on resume (data.manifest: the same rows at another path); undo the change, or train a new "
            "run (another --out)"
        )


def recorded_hashes(run_dir: Path) -> Optional[dict[str, str]]:
    """{"train", "val"} row hashes saved in last/state.json (older runs: model.json's training hash).

    Read through the run-folder JSON caps (checkpoint.read_run_json): a hostile file is a
    CheckpointError naming it; a missing one gives None."""
    from chestxr.modeling.checkpoint import read_run_json

    try:
        state = run_dir / "last" / "state.json"
        doc = read_run_json(state) if state.is_file() else {}
        hashes = (doc.get("extra") or {}).get("manifest_hashes") if isinstance(doc.get("extra"), dict) else None
        if isinstance(hashes, dict):
            return {k: str(v) for k, v in hashes.items() if isinstance(v, str)}
        model = run_dir / "model.json"
        meta = read_run_json(model) if model.is_file() else {}
        return {"train": meta["training_manifest_hash"]} if meta.get("training_manifest_hash") else None
    except (OSError, KeyError):
        return None
