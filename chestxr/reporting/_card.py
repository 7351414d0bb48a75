"""Model card (model_card.html + model_card.md) from a run folder's records, after Mitchell et al.,
"Model Cards for Model Reporting" (FAT* 2019): model details, intended use, factors, metrics,
training data, evaluation data, quantitative analyses, ethical considerations, caveats.

:func:`build_card` turns plain records (model.json as a dict, the evaluations' metrics.json, the
approval status, the data summary, an optional intended-use YAML) into one context dict;
:func:`write_model_card` renders it twice: HTML (self-contained, autoescaped jinja2, a strict
Content-Security-Policy, like the other reports) and Markdown (table cells escaped). The reporting
layer reads no run folder itself: :func:`chestxr.runs.card_run` gathers the records.

Checklist items covered (CLAIM, Mongan et al. 2020, item numbers of the 2020 checklist): 7 data
sources, 9 preprocessing, 13 missing labels (masking policy), 14 reference standard (label policy),
20-21 partitions and their patient-level disjointness, 22 model, 23 software versions, 25 training
details, 26 model selection, 28 metrics, 29 uncertainty (method named beside every interval), 34
characteristics per partition (views, sex, age bands), 35-36 performance with intervals on each
evaluation given, 38 limitations. TRIPOD+AI (Collins et al. 2024), by topic: source of data,
outcome definition, sample size per class, handling of missing data, model specification and
thresholds, performance measures with uncertainty, fairness (subgroups), intended use and
limitations. Items a run folder cannot know (study design, flow of patients, external validation
plan, funding) are listed as "not covered" on the card.
"""

from __future__ import annotations

import datetime as _dt
import html
from pathlib import Path
from typing import Any, Mapping, Sequence

from chestxr.core import write_text_atomic
from chestxr.evaluation import OperatingPoint, guarantee_statement

DEFAULT_INTENDED_USE = {
    "intended_use": "Research use only. Not a medical device; not cleared or approved for clinical decisions.",
    "intended_users": "Machine-learning engineers and researchers evaluating chest X-ray classifiers.",
    "out_of_scope": "Diagnosis or triage of patients without review by a qualified radiologist; populations, "
    "devices or views unlike the training data.",
    "limitations": "Trained and evaluated on the data listed below only; performance elsewhere is unknown. "
    "Labels of public chest X-ray sets are text-mined and noisy.",
    "ethical_considerations": "Subgroup performance (sex, age, view) is shown where the data carry it; small "
    "groups give unstable estimates. Reports carry no patient identifiers.",
    "caveats": "Operating points are guaranteed only as stated (one-sided bound, confidence level, calibration "
    "population); others are point estimates.",
}
USE_KEYS = tuple(DEFAULT_INTENDED_USE)
CLAIM_ITEMS = (
    ("7", "data sources"),
    ("9", "preprocessing"),
    ("13", "missing labels (masking policy)"),
    ("14", "reference standard: label policy"),
    ("20-21", "partitions, patient-level"),
    ("22", "model"),
    ("23", "software versions"),
    ("25", "training details"),
    ("26", "final model selection"),
    ("28", "metrics"),
    ("29", "uncertainty (interval methods)"),
    ("34", "characteristics per partition"),
    ("35-36", "performance with intervals"),
    ("38", "limitations"),
)
NOT_COVERED = "study design, patient flow, reader study, external validation plan, registration, funding"


def load_intended_use(path: str | Path | None) -> dict[str, str]:
    """Defaults ("research use") updated by a small YAML of USE_KEYS; unknown keys are an error."""
    from chestxr.core import ConfigError

    out = dict(DEFAULT_INTENDED_USE)
    if path is None:
        return out
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the intended-use YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with keys {list(USE_KEYS)}")
    unknown = sorted(set(data) - set(USE_KEYS))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown}; allowed: {list(USE_KEYS)}")
    out.update({k: str(v) for k, v in data.items() if v is not None})
    return out


def _num(v: Any, nd: int = 3) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "-"
    return "-" if f != f or f in (float("inf"), float("-inf")) else f"{f:.{nd}f}"


def _ci(pair: Any) -> str:
    if not pair or len(pair) != 2 or _num(pair[0]) == "-":
        return "-"
    return f"[{_num(pair[0])}, {_num(pair[1])}]"


def _operating_points(points: Sequence[OperatingPoint]) -> list[dict[str, str]]:
    rows = []
    for p in points:
        rows.append(
            {
                "finding": p.finding,
                "method": str(p.method),
                "threshold": _num(p.threshold, 4),
                "status": p.status,
                "guarantee": p.describe(),
                "sensitivity": f"{_num(p.sensitivity)} {_ci(p.sensitivity_ci)}",
                "specificity": f"{_num(p.specificity)} {_ci(p.specificity_ci)}",
                "n": f"{p.n_pos} / {p.n_neg}",
            }
        )
    return rows


def _check_words(p: Mapping[str, Any]) -> str:
    """The card's words for an evaluation's check of a stored operating point (chestxr/evaluation/_promise.py):
    "FLAGGED" (shown red) only for a contradicted guarantee; never "holds" for a test that did not reject."""
    if not p:
        return "none stored"
    state = p.get("state")
    if state == "contradicted":
        return "FLAGGED: contradicted (guarantee)"
    if state == "not_contradicted":
        return "not contradicted (guarantee)"
    if state == "moved":
        return "operating point moved (point rule, not a promise)"
    if state == "not_moved":
        return "no evidence the operating point moved (point rule)"
    if state == "refused" or (state is None and p.get("holds", False) is None):
        return "no threshold (refused)"
    if state is None:  # metrics.json of an older chestxr: its test did not reject / rejected
        return "FLAGGED (older check)" if p.get("holds") is False else "not rejected (older check)"
    return str(p.get("verdict") or state)


def _evaluation(name: str, metrics: Mapping[str, Any]) -> dict[str, Any]:
    per = metrics.get("findings") or {}
    rows, subgroup_rows = [], []
    for finding, m in per.items():
        p = m.get("promise") or {}
        promise = _check_words(p)
        rows.append(
            {
                "finding": finding,
                "n": f"{m.get('n_pos')} / {m.get('n_neg')}",
                "auroc": f"{_num(m.get('auroc'))} {_ci(m.get('auroc_ci'))}",
                "sensitivity": f"{_num(m.get('sensitivity'))} {_ci(m.get('sensitivity_ci'))}",
                "specificity": f"{_num(m.get('specificity'))} {_ci(m.get('specificity_ci'))}",
                "promise": promise,
                "promise_detail": str(p.get("detail") or ""),
            }
        )
    for column, table in (metrics.get("subgroups") or {}).items():
        for value, group in table.items():
            for finding, m in (group.get("findings") or {}).items():
                subgroup_rows.append(
                    {
                        "column": str(column),
                        "value": str(value),
                        "finding": str(finding),
                        "n": f"{m.get('n_pos')} / {m.get('n_neg')}",
                        "auroc": _num(m.get("auroc")),
                        "sensitivity": _num(m.get("sensitivity")),
                        "specificity": _num(m.get("specificity")),
                    }
                )
    info = metrics.get("model_info") or {}
    return {
        "name": name,
        "title": str(metrics.get("title") or name),
        "manifest": str(info.get("manifest") or "-"),
        "manifest_hash": str(info.get("manifest_hash") or "-"),
        "n_images": metrics.get("n_images"),
        "n_patients": metrics.get("n_patients"),
        "level": metrics.get("level"),
        "promise_alpha": metrics.get("promise_alpha", 0.05),
        "methods": dict(metrics.get("interval_methods") or {"auroc": "percentile bootstrap by patient"}),
        "rows": rows,
        "subgroups": subgroup_rows,
        "overlap": str(info.get("training_patient_overlap_text") or "not recorded (evaluated by an older chestxr)"),
        "overlap_count": info.get("training_patient_overlap"),
    }


def build_card(
    meta: Mapping[str, Any],
    *,
    operating_points: Sequence[OperatingPoint] = (),
    evaluations: Sequence[tuple[str, Mapping[str, Any]]] = (),
    approval: Mapping[str, Any] | None = None,
    data_summary: Mapping[str, Any] | None = None,
    intended_use: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The card's context: {details, use, recipe, training_data, operating_points, evaluations,
    approval, versions, claim_items, not_covered, generated}. All values are plain text / numbers.

    meta: the run's model.json document; operating_points: its stored operating points (each states its
    guarantee or refusal itself, :meth:`chestxr.evaluation.OperatingPoint.describe`); evaluations: (name,
    metrics.json document) of each evaluation."""
    config = meta.get("config") or {}
    versions = dict(meta.get("versions") or {})
    for key, name in (("chestxr_version", "chestxr"), ("torch_version", "torch")):
        if meta.get(key) and name not in versions:
            versions[name] = meta[key]
    pre = meta.get("preprocessing") or {}
    train_cfg = config.get("train") or {}
    recipe = [
        ("backbone", f"{meta.get('backbone')} ({meta.get('mode')}, {meta.get('task', 'multilabel')})"),
        ("initialisation", str((config.get("model") or {}).get("weights") or "from scratch (no pretrained weights)")),
        ("findings", ", ".join(meta.get("findings") or [])),
        ("preprocessing", ", ".join(f"{k}={v}" for k, v in pre.items() if v is not None)),
        ("label policy", ", ".join(f"{k}={v}" for k, v in (meta.get("label_policy") or {}).items())),
        ("training", ", ".join(f"{k}={train_cfg[k]}" for k in sorted(train_cfg) if train_cfg[k] is not None)),
        (
            "model selection",
            f"best epoch {meta.get('best_epoch')} by validation mean AUROC {_num(meta.get('best_val_mean_auroc'))}",
        ),
        ("model.json version", str(meta.get("version"))),
        ("weights sha256", str(meta.get("weights_sha256") or "-")),
    ]
    return {
        "details": {
            "name": str(config.get("name") or "chestxr model"),
            "created": str(meta.get("created") or "-"),
            "version": str(meta.get("version")),
        },
        "use": dict(intended_use or DEFAULT_INTENDED_USE),
        "recipe": recipe,
        "training_data": dict(data_summary or {"source": "not available in the run folder", "splits": []}),
        "operating_points": _operating_points(operating_points),
        "calibration": dict(meta.get("calibration") or {}),
        "guarantees": guarantee_statement(operating_points),
        "evaluations": [_evaluation(n, m) for n, m in evaluations],
        "approval": dict(approval or {"state": "not_approved", "banner": "NOT APPROVED FOR CLINICAL USE"}),
        "versions": sorted((str(k), str(v)) for k, v in versions.items()),
        "claim_items": list(CLAIM_ITEMS),
        "not_covered": NOT_COVERED,
        "generated": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _md(text: Any) -> str:
    """Markdown-safe cell text: HTML-escaped, pipes and newlines neutralised."""
    return html.escape(str(text)).replace("|", "\\|").replace("\n", " ")


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(_md(h) for h in header) + " |", "|" + " --- |" * len(header)]
    out += ["| " + " | ".join(_md(c) for c in r) + " |" for r in rows]
    return out + [""]


def render_markdown(card: Mapping[str, Any]) -> str:
    """model_card.md: the same sections as the HTML card."""
    a = card["approval"]
    lines = [f"# Model card: {_md(card['details']['name'])}", "", f"**{_md(a.get('banner'))}**", ""]
    lines += ["## Model details", ""] + _md_table(["", ""], card["recipe"])
    lines += ["## Intended use", ""] + _md_table(["", ""], [(k.replace("_", " "), v) for k, v in card["use"].items()])
    td = card["training_data"]
    lines += ["## Training data", "", f"Source: {_md(td.get('source'))}", ""]
    if td.get("splits"):
        lines += _md_table(
            ["split", "images", "patients", "positives per finding", "views", "sex", "age bands"],
            [
                (s["split"], s["n_images"], s["n_patients"], s["positives"], s["views"], s["sex"], s["age"])
                for s in td["splits"]
            ],
        )
    lines += ["## Operating points", ""]
    cal = card.get("calibration") or {}
    if cal:
        lines += [
            f"Calibrated on {_md(cal.get('manifest', '-'))}: {_md(cal.get('n_images', '-'))} images, "
            f"{_md(cal.get('n_patients', '-'))} patients; training-patient overlap: "
            f"{_md(cal.get('training_patient_overlap_text') or 'not recorded')}.",
            "",
        ]
    if card.get("guarantees"):
        lines += [f"Guarantees: {_md(card['guarantees'])}", ""]
    lines += _md_table(
        ["finding", "method", "threshold", "guarantee", "sensitivity (calibration)", "specificity (calibration)"],
        [
            (r["finding"], r["method"], r["threshold"], r["guarantee"], r["sensitivity"], r["specificity"])
            for r in card["operating_points"]
        ],
    )
    for ev in card["evaluations"]:
        lines += [
            f"## Evaluation: {_md(ev['title'])}",
            "",
            f"{_md(ev['n_images'])} images, {_md(ev['n_patients'])} patients; manifest sha256 "
            f"{_md(ev['manifest_hash'])}; intervals: " + _md("; ".join(f"{k}: {v}" for k, v in ev["methods"].items())),
            "",
            ("**" if ev["overlap_count"] else "")
            + f"Training-patient overlap: {_md(ev['overlap'])}"
            + ("** (its numbers are optimistic)" if ev["overlap_count"] else ""),
            "",
        ]
        lines += _md_table(
            ["finding", "pos / neg", "AUROC", "sensitivity", "specificity", "promise"],
            [(r["finding"], r["n"], r["auroc"], r["sensitivity"], r["specificity"], r["promise"]) for r in ev["rows"]],
        )
        if ev["subgroups"]:
            lines += ["### Subgroups", ""] + _md_table(
                ["by", "value", "finding", "pos / neg", "AUROC", "sensitivity", "specificity"],
                [
                    (s["column"], s["value"], s["finding"], s["n"], s["auroc"], s["sensitivity"], s["specificity"])
                    for s in ev["subgroups"]
                ],
            )
    if not card["evaluations"]:
        lines += ["## Evaluation", "", "No evaluation was given (`chestxr card RUN --eval DIR`).", ""]
    lines += [
        "## Ethical considerations",
        "",
        _md(card["use"]["ethical_considerations"]),
        "",
        "## Caveats and recommendations",
        "",
        _md(card["use"]["caveats"]),
        "",
        "## Software",
        "",
    ] + _md_table(["package", "version"], card["versions"])
    lines += [
        "## Reporting checklists",
        "",
        "CLAIM 2020 items covered: " + _md(", ".join(f"{n} ({t})" for n, t in card["claim_items"])) + ".",
        "",
        f"Not covered (a run folder cannot know): {_md(card['not_covered'])}.",
        "",
        f"Generated {card['generated']} by chestxr.",
        "",
    ]
    return "\n".join(lines)


def write_model_card(out_dir: str | Path, card: Mapping[str, Any]) -> dict[str, Path]:
    """Write model_card.html and model_card.md into ``out_dir`` (atomically); returns their paths."""
    from chestxr import __version__
    from chestxr.reporting._plots import render_template

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"html": out / "model_card.html", "md": out / "model_card.md"}
    write_text_atomic(
        paths["html"],
        render_template(
            "model_card.html",
            card=card,
            version=__version__,
            approval=card["approval"],
            title=f"Model card: {card['details']['name']}",
        ),
    )
    write_text_atomic(paths["md"], render_markdown(card))
    return paths
