"""Finding vocabularies and label policies.

One canonical name per finding across NIH ChestX-ray14, CheXpert and MIMIC-CXR (the spellings
torchxrayvision uses: NIH's "Effusion", "Pleural_Thickening"; CheXpert's "Lung Opacity", ...).
``canonical_name`` maps any alias (case, spaces, underscores and hyphens ignored) to it, and
``relabel`` gives a manifest exactly the finding columns a model expects, so a model trained on
one source can be evaluated on another (findings a source never labels become blank = masked).

Label values (see data_manifests/README.md): 1 positive, 0 negative, -1 uncertain, NaN blank
(not mentioned), or a soft value in [0, 1]. ``apply_label_policy`` turns them into training
targets and a mask (False = left out of the loss and the metrics).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np

from chestxr.core import ConfigError, LabelPolicy

if TYPE_CHECKING:  # pragma: no cover
    from chestxr.data._schema import Manifest

NO_FINDING = "No Finding"

#: NIH ChestX-ray14's 14 findings (canonical spellings).
NIH14 = [
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
]

#: CheXpert / MIMIC-CXR's 14 observations (canonical spellings; "Pleural Effusion" -> "Effusion").
CHEXPERT14 = [
    NO_FINDING,
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
]

#: The five CheXpert competition findings.
CHEXPERT5 = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion"]

#: Every canonical finding name, NIH first.
CANONICAL_FINDINGS = NIH14 + [f for f in CHEXPERT14 if f not in NIH14]

#: Extra spellings -> canonical name (variants differing only in case/space/underscore/hyphen
#: are matched without being listed).
ALIASES: dict[str, str] = {
    "Pleural Effusion": "Effusion",
    "Effusions": "Effusion",
    "Infiltrate": "Infiltration",
    "Infiltrates": "Infiltration",
    "Airspace Opacity": "Lung Opacity",
    "Opacity": "Lung Opacity",
    "Enlarged Cardiac Silhouette": "Cardiomegaly",
    "Cardiomediastinum": "Enlarged Cardiomediastinum",
    "Support Device": "Support Devices",
    "Fractures": "Fracture",
    "Nodules": "Nodule",
    "Masses": "Mass",
    "Normal": NO_FINDING,
    "No Findings": NO_FINDING,
}

_UNCERTAIN_WORDS = ("ones", "zeros", "masked", "soft")
_BLANK_WORDS = ("zeros", "masked")
_PER_FINDING_KEYS = ("uncertain", "blank", "soft_range")


def _key(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", str(name)).lower()


_LOOKUP: dict[str, str] = {_key(n): n for n in CANONICAL_FINDINGS}
_LOOKUP.update({_key(a): c for a, c in ALIASES.items()})


def canonical_name(name: str) -> str:
    """Canonical spelling of a finding name; unknown names are returned unchanged (stripped).

    >>> canonical_name("pleural effusion"), canonical_name("PLEURAL-THICKENING"), canonical_name("Foo")
    ('Effusion', 'Pleural_Thickening', 'Foo')
    """
    return _LOOKUP.get(_key(name), str(name).strip())


def same_finding_key(name: str) -> str:
    """Key under which two spellings name the same finding (canonical name, case/space-insensitive)."""
    return _key(canonical_name(name))


def match_findings(available: Sequence[str], requested: Sequence[str]) -> dict[str, Optional[str]]:
    """For each requested finding, the column of ``available`` naming the same finding (or None).

    An exact name wins; otherwise names are compared by ``same_finding_key`` (aliases, case,
    spaces, underscores and hyphens ignored).
    """
    by_canon: dict[str, str] = {}
    for col in available:
        by_canon.setdefault(same_finding_key(col), col)
    out: dict[str, Optional[str]] = {}
    for name in requested:
        out[name] = name if name in available else by_canon.get(same_finding_key(name))
    return out


def relabel(manifest: "Manifest", findings: list[str]) -> "Manifest":
    """A copy of ``manifest`` whose finding columns are exactly ``findings`` (in that order).

    Columns are matched through aliases ("Pleural Effusion" serves "Effusion") and renamed to the
    requested spelling; a finding the manifest does not have becomes an all-blank (NaN) column,
    so every policy masks it, with a warning. Finding columns not requested are dropped.
    """
    findings = list(findings)
    if len(set(findings)) != len(findings):
        raise ConfigError(f"finding list has duplicates: {findings}")
    frame = manifest.frame
    matched = match_findings(manifest.findings, findings)
    used = [c for c in matched.values() if c is not None]
    dup = sorted({c for c in used if used.count(c) > 1})
    if dup:
        raise ConfigError(f"findings {findings} map several names onto the same column(s) {dup}")
    missing = [f for f, c in matched.items() if c is None]
    if missing:
        warnings.warn(
            f"{manifest.source}: no column for finding(s) {missing}; they are blank (masked) in this data",
            stacklevel=2,
        )
    base = frame.drop(columns=[c for c in manifest.findings if c in frame.columns])
    cols = {}
    for f, c in matched.items():
        cols[f] = frame[c].to_numpy(dtype=np.float64) if c is not None else np.full(len(frame), np.nan)
    import pandas as pd

    new = pd.concat([base.reset_index(drop=True), pd.DataFrame(cols, index=range(len(frame)))], axis=1)
    new.index = frame.index
    return replace(manifest, frame=new, findings=findings)


def select_findings(
    manifest_findings: Sequence[str], policy: LabelPolicy, requested: Optional[Sequence[str]] = None
) -> list[str]:
    """The model's finding list.

    ``requested`` (e.g. ``config.data.findings``) is used as given: an explicit request for
    "No Finding" is honoured. Otherwise every finding of the manifest is used, minus "No Finding"
    (any alias) when ``policy.no_finding == "drop"``.
    """
    validate_label_policy(policy)
    if requested is not None:
        requested = list(requested)
        if not requested:
            raise ConfigError("data.findings is an empty list; name at least one finding or leave it unset")
        if len(set(requested)) != len(requested):
            raise ConfigError(f"data.findings has duplicates: {requested}")
        return requested
    out = list(manifest_findings)
    if policy.no_finding == "drop":
        out = [f for f in out if same_finding_key(f) != same_finding_key(NO_FINDING)]
    return out


def validate_label_policy(policy: LabelPolicy) -> None:
    """Raise ConfigError naming the field when a policy value is not allowed."""
    _check_rule(policy.uncertain, "labels.uncertain", uncertain=True)
    _check_rule(policy.blank, "labels.blank", uncertain=False)
    _check_range(policy.soft_range, "labels.soft_range")
    _check_range(policy.eval_bounds, "labels.eval_bounds")
    if policy.no_finding not in ("keep", "drop"):
        raise ConfigError(f"labels.no_finding: {policy.no_finding!r} is not one of ['keep', 'drop']")
    if not isinstance(policy.per_finding, dict):
        raise ConfigError("labels.per_finding must map finding names to {uncertain:, blank:, soft_range:}")
    for name, over in policy.per_finding.items():
        where = f"labels.per_finding.{name}"
        if not isinstance(over, dict):
            raise ConfigError(f"{where}: expected a mapping like {{uncertain: ones}}, got {over!r}")
        unknown = sorted(set(over) - set(_PER_FINDING_KEYS))
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {list(_PER_FINDING_KEYS)}")
        if "uncertain" in over:
            _check_rule(over["uncertain"], f"{where}.uncertain", uncertain=True)
        if "blank" in over:
            _check_rule(over["blank"], f"{where}.blank", uncertain=False)
        if "soft_range" in over:
            _check_range(over["soft_range"], f"{where}.soft_range")


def _check_rule(value: Any, where: str, *, uncertain: bool) -> None:
    words = _UNCERTAIN_WORDS if uncertain else _BLANK_WORDS
    if isinstance(value, str):
        if value not in words:
            extra = " or a number in [0, 1]" if uncertain else ""
            raise ConfigError(f"{where}: {value!r} is not one of {list(words)}{extra}")
        return
    if uncertain and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not 0.0 <= float(value) <= 1.0:
            raise ConfigError(f"{where}: {value!r} must be in [0, 1]")
        return
    raise ConfigError(
        f"{where}: {value!r} is not one of {list(words)}" + (" or a number in [0, 1]" if uncertain else "")
    )


def _check_range(value: Any, where: str) -> None:
    ok = (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    )
    if not ok or not 0.0 <= float(value[0]) <= float(value[1]) <= 1.0:
        raise ConfigError(f"{where}: {value!r} must be [low, high] with 0 <= low <= high <= 1")


def _rules_for(findings: Sequence[str], policy: LabelPolicy) -> list[dict[str, Any]]:
    """Resolved {uncertain, blank, soft_range} per finding (per_finding matched via aliases)."""
    over_by_canon = {same_finding_key(k): (k, v) for k, v in policy.per_finding.items()}
    unused = {k for k in policy.per_finding}
    rules = []
    for f in findings:
        rule = {"uncertain": policy.uncertain, "blank": policy.blank, "soft_range": tuple(policy.soft_range)}
        hit = policy.per_finding.get(f)
        key = f
        if hit is None and same_finding_key(f) in over_by_canon:
            key, hit = over_by_canon[same_finding_key(f)]
        if hit is not None:
            rule.update(hit)
            unused.discard(key)
        rules.append(rule)
    if unused:
        warnings.warn(f"labels.per_finding names finding(s) not in use: {sorted(unused)} (ignored)", stacklevel=3)
    return rules


def apply_label_policy(
    labels: np.ndarray, findings: Sequence[str], policy: LabelPolicy, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Targets and mask from raw labels.

    labels: float (n_samples, n_findings): 1/0, soft values in [0, 1], -1 uncertain, NaN blank.
    Returns ``targets`` float32 (n_samples, n_findings) and ``mask`` bool (n_samples, n_findings),
    True where the label counts in the loss and the metrics. Values in [0, 1] are kept; -1 follows
    the finding's ``uncertain`` rule ("ones" 1, "zeros" 0, "masked", "soft" = U-Ones with label
    smoothing: uniform in ``soft_range``, Pham et al. 2019, drawn from ``seed`` per row and finding;
    a number c: c); NaN follows ``blank`` ("zeros" 0, "masked"). Masked targets are 0.
    """
    validate_label_policy(policy)
    labels = np.asarray(labels, dtype=np.float64)
    if labels.ndim != 2 or labels.shape[1] != len(findings):
        raise ValueError(f"labels must be (n_samples, {len(findings)}), got shape {labels.shape}")
    bad = ~np.isnan(labels) & (labels != -1.0) & ((labels < 0.0) | (labels > 1.0))
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ValueError(f"label {labels[r, c]!r} (row {r}, {findings[c]!r}) is not 1, 0, -1, blank or in [0, 1]")
    rules = _rules_for(findings, policy)
    targets = np.where(np.isnan(labels) | (labels == -1.0), 0.0, labels)
    mask = np.ones(labels.shape, dtype=bool)
    uniform = None
    for j, rule in enumerate(rules):
        unc = labels[:, j] == -1.0
        blank = np.isnan(labels[:, j])
        u = rule["uncertain"]
        if u == "ones":
            targets[unc, j] = 1.0
        elif u == "zeros":
            targets[unc, j] = 0.0
        elif u == "masked":
            mask[unc, j] = False
        elif u == "soft":
            if uniform is None:  # one draw for the whole array: independent of which findings use it
                uniform = np.random.default_rng(seed).random(labels.shape)
            lo, hi = rule["soft_range"]
            targets[unc, j] = lo + (hi - lo) * uniform[unc, j]
        else:
            targets[unc, j] = float(u)
        if rule["blank"] == "masked":
            mask[blank, j] = False
    return targets.astype(np.float32), mask
