"""Approval binds everything that changes a call, keyed with the run's key (issue 24.1).

After ``chestxr approve``, editing any of weights, thresholds, the findings or their order, task/mode, the
architecture, preprocessing, probability calibration or the reference profile makes the approval void, and
``predict --require-approval`` refuses (it used to answer "Approved for clinical use" with every probability
labelled by another finding after two names were swapped). A record cannot be forged without the run's key
(an unkeyed sha256 over the edited file, a guessed key, a record copied from another run all stay void);
approvals recorded by the older unkeyed scheme read as void with the reason.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import shutil

import pytest

from chestxr.cli import main


def _calibrate(run, manifest):
    args = ["calibrate", "--checkpoint", str(run), "--manifest", str(manifest), "--split", "val"]
    assert main([*args, "--method", "youden", "--bootstrap", "20", "--workers", "0"]) == 0


@pytest.fixture()
def approved(tiny_run_copy, synth_manifest, capsys):
    _calibrate(tiny_run_copy, synth_manifest)
    assert main(["approve", str(tiny_run_copy), "--reviewer", "Dr A. Radiologist"]) == 0
    capsys.readouterr()
    return tiny_run_copy


def _edit_model_json(run, fn):
    path = run / "model.json"
    meta = json.loads(path.read_text())
    fn(meta)
    path.write_text(json.dumps(meta, indent=1))


def _swap_findings(meta):
    f = meta["findings"]
    f[0], f[1] = f[1], f[0]


def _predict_require(run, manifest, out, capsys) -> tuple[int, str]:
    code = main(
        ["predict", "--checkpoint", str(run), "--manifest", str(manifest), "--out", str(out), "--workers", "0"]
        + ["--require-approval"]
    )
    cap = capsys.readouterr()
    return code, cap.out + cap.err


def _temperature_calibrator(meta):
    n = len(meta["findings"])
    meta["probability_calibration"] = {
        "format": "chestxr.probability_calibrator",
        "version": 1,
        "method": "temperature",
        "findings": list(meta["findings"]),
        "n_samples": [10] * n,
        "params": [{"temperature": 3.0}] * n,
    }


EDITS = {
    "findings order": (_swap_findings, "findings"),
    "preprocessing size": (lambda m: m["preprocessing"].update(size=40), "preprocessing"),
    "preprocessing normalization": (lambda m: m["preprocessing"].update(normalization="none"), "preprocessing"),
    "preprocessing voi": (lambda m: m["preprocessing"].update(voi="ignore"), "preprocessing"),
    "preprocessing allow_color": (lambda m: m["preprocessing"].update(allow_color=True), "preprocessing"),
    "task": (lambda m: m.update(task="multiclass"), "task"),
    "dropout": (lambda m: m.update(dropout=0.5), "architecture"),
    "threshold": (lambda m: m["thresholds"][0].update(threshold=0.01), "thresholds"),
    "probability calibration": (_temperature_calibrator, "probability_calibration"),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_any_change_that_alters_a_call_voids_the_approval(edit, approved, synth_manifest, tmp_path, capsys):
    from chestxr.runs import approval_status

    code, text = _predict_require(approved, synth_manifest, tmp_path / "ok", capsys)
    assert code == 0 and "Approved for clinical use" in text, text
    fn, part = EDITS[edit]
    _edit_model_json(approved, fn)
    try:
        status = approval_status(approved)
    except Exception as exc:  # an edit model.json's own validation refuses is refused anyway  # noqa: BLE001
        pytest.skip(f"model.json refuses this edit by itself: {exc}")
    assert status.state == "void" and part in status.changed, status
    code, text = _predict_require(approved, synth_manifest, tmp_path / "refused", capsys)
    assert code == 2 and "NOT APPROVED FOR CLINICAL USE" in text and "void" in text, text
    assert not (tmp_path / "refused").exists()


def test_reference_profile_is_bound(approved, tmp_path, capsys):
    from chestxr.runs import REFERENCE_PROFILE_FILE, approval_status

    assert approval_status(approved).state == "approved"
    profile = approved / REFERENCE_PROFILE_FILE
    profile.write_text('{"chestxr_reference_profile": 1}')  # one appears after the approval
    status = approval_status(approved)
    assert status.state == "void" and status.changed == ("reference_profile",)
    assert main(["approve", str(approved), "--reviewer", "Dr A"]) == 0  # approved with the profile
    assert approval_status(approved).state == "approved"
    profile.write_text('{"chestxr_reference_profile": 1, "x": 2}')  # and it changes
    assert approval_status(approved).changed == ("reference_profile",)
    profile.unlink()  # or disappears
    assert approval_status(approved).state == "void"


def _old_binding(meta: dict, weights_sha: str) -> str:
    """The binding chestxr wrote before issue 24: an unkeyed sha256 of weights, thresholds and calibrator."""
    doc = {
        "weights_sha256": weights_sha,
        "thresholds": [[r["finding"], r.get("method"), r.get("threshold")] for r in meta.get("thresholds") or []],
        "probability_calibration": meta.get("probability_calibration"),
    }
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def test_a_record_cannot_be_forged_without_the_key(approved, synth_manifest, tmp_path, capsys):
    from chestxr.core import hash_file
    from chestxr.runs import RunMetadata, approval_status, binding_hmac, bound_parts, part_digests

    _edit_model_json(approved, _swap_findings)
    meta = json.loads((approved / "model.json").read_text())
    parts = bound_parts(approved, RunMetadata.from_json(meta, "model.json"))
    # 1. the unkeyed scheme, recomputed over the edited file
    forged = dict(meta["approval"], binding_sha256=_old_binding(meta, hash_file(approved / "model.safetensors")))
    forged.pop("binding_scheme")
    forged.pop("binding_hmac_sha256")
    _edit_model_json(approved, lambda m: m.update(approval=forged))
    assert approval_status(approved).state == "void"
    # 2. the new scheme under a guessed key, digests of the parts updated to match
    guess = dict(meta["approval"], binding_hmac_sha256=binding_hmac(parts, secrets.token_bytes(32)))
    guess["bound"] = part_digests(parts)
    _edit_model_json(approved, lambda m: m.update(approval=guess))
    status = approval_status(approved)
    assert status.state == "void" and "made without the run's key" in status.reason, status
    code, text = _predict_require(approved, synth_manifest, tmp_path / "p", capsys)
    assert code == 2 and "void" in text
    # 3. only the run's key makes it valid (what `chestxr approve` does)
    key = bytes.fromhex((approved / "patient_hash.key").read_text().strip())
    right = dict(guess, binding_hmac_sha256=hmac.new(key, b"", hashlib.sha256).hexdigest())
    _edit_model_json(approved, lambda m: m.update(approval=right))
    assert approval_status(approved).state == "void"  # not just any HMAC under the key: the binding's


def test_a_record_copied_to_another_run_is_void(approved, tmp_path):
    from chestxr.runs import approval_status

    other = tmp_path / "other"
    shutil.copytree(approved, other)
    (other / "patient_hash.key").write_text(secrets.token_bytes(32).hex() + "\n")  # same files, its own key
    status = approval_status(other)
    assert status.state == "void" and "not the key the approval was made with" in status.reason
    record = json.loads((other / "model.json").read_text())["approval"]
    record.pop("key_id")  # a forger drops the key fingerprint: the HMAC still does not match
    _edit_model_json(other, lambda m: m.update(approval=record))
    assert approval_status(other).state == "void"


def test_missing_key_cannot_verify(approved):
    from chestxr.runs import approval_status

    (approved / "patient_hash.key").unlink()
    status = approval_status(approved)
    assert status.state == "void" and "cannot be verified" in status.reason


def test_an_old_unkeyed_approval_reads_as_void_with_the_reason(tiny_run_copy, synth_manifest, tmp_path, capsys):
    from chestxr.core import hash_file
    from chestxr.runs import approval_status

    run = tiny_run_copy
    _calibrate(run, synth_manifest)
    meta = json.loads((run / "model.json").read_text())
    old = {
        "reviewer": "Dr Old",
        "time": "2025-01-01T00:00:00Z",
        "model_version": meta["version"],
        "binding_sha256": _old_binding(meta, hash_file(run / "model.safetensors")),
        "weights_sha256": hash_file(run / "model.safetensors"),
    }
    _edit_model_json(run, lambda m: m.update(approval=old))
    status = approval_status(run)
    assert status.state == "void" and "older chestxr" in status.reason and "approve the run again" in status.reason
    code, text = _predict_require(run, synth_manifest, tmp_path / "p", capsys)
    assert code == 2 and "older chestxr" in text


def test_evaluate_honours_require_approval(tiny_run_copy, synth_manifest, tmp_path, capsys):
    run = tiny_run_copy
    _calibrate(run, synth_manifest)
    args = ["evaluate", "--checkpoint", str(run), "--manifest", str(synth_manifest), "--split", "test"]
    args += ["--bootstrap", "10", "--workers", "0", "--require-approval"]
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "e1")]) == 2
    assert "NOT APPROVED FOR CLINICAL USE" in capsys.readouterr().err and not (tmp_path / "e1").exists()
    assert main(["approve", str(run), "--reviewer", "Dr A"]) == 0
    assert main([*args, "--out", str(tmp_path / "e2")]) == 0


def test_card_honours_require_approval(tiny_run_copy, synth_manifest, tmp_path, capsys):
    run = tiny_run_copy
    _calibrate(run, synth_manifest)
    capsys.readouterr()
    assert main(["card", str(run), "--out", str(tmp_path / "c1"), "--require-approval"]) == 2
    assert "NOT APPROVED FOR CLINICAL USE" in capsys.readouterr().err and not (tmp_path / "c1").exists()
    assert main(["approve", str(run), "--reviewer", "Dr A"]) == 0
    assert main(["card", str(run), "--out", str(tmp_path / "c2"), "--require-approval"]) == 0
