"""A DICOM Comprehensive SR per study with chestxr's results (highdicom, TID 1500 Measurement Report).

One measurement group (TID 1501) per finding, holding:

* "Probability of finding" for the study (the study_reduce of its images, as in study_predictions.csv),
  and one per image, each referencing its source image (as in predictions.csv);
* "Decision threshold" and the qualitative evaluation "Call at stored threshold" (SCT positive / negative);
* "Threshold guarantee" (a coded value whose meaning says the status, bound, level, "joint" with the family
  size, and the prevalence range of a PPV/NPV rule, in at most 64 characters; or "no guarantee") and
  "Guarantee lower bound" when the run holds one;
* "Threshold approval status" (approved / void / not approved, recomputed against the run);
* the algorithm identification (TID 4019): model name, version, ``weights_sha256=...`` and, when the run holds
  guarantees, ``guarantees: ...`` (their joint level, family size, per-finding level and prevalence range in
  words: :func:`chestxr.evaluation.guarantee_statement`).

The SR is in the patient's study (patient and study modules copied from the source images by highdicom),
references every source image in its evidence and image library, and has new UIDs derived
deterministically from the study, the images and the model weights: producing it twice (a restarted
listener) gives the same SOP Instance UID, so the PACS files it once. Codes without a standard code use
the local scheme ``99CHESTXR``. It is the one artifact that carries the patient's identifiers.

Text values are valid for their VR whatever the names hold (chestxr/pacs/_dicom_text.py): code meanings are one line,
without backslash, at most 64 bytes; TEXT items one line; the SR is UTF-8 (ISO_IR 192) when any value, the
patient's name included, is not ASCII. A finding named "Pleural\\Effusion" shows as "Pleural/Effusion" in its code
meaning (its tracking identifier keeps the backslash).
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping, Sequence

from chestxr.evaluation import OperatingPoint, guarantee_statement
from chestxr.pacs._dicom_text import lo, set_character_set, text
from chestxr.pacs._extras import require
from chestxr.runs import ApprovalStatus, Run

SCHEME = "99CHESTXR"
SERIES_NUMBER = 9901
SERIES_DESCRIPTION = "chestxr AI findings (decision support, not a diagnosis)"


def _codes():
    from pydicom.sr.coding import Code

    return {
        "probability": Code("CXR001", SCHEME, "Probability of finding"),
        "threshold": Code("CXR002", SCHEME, "Decision threshold"),
        "call": Code("CXR003", SCHEME, "Call at stored threshold"),
        "guarantee": Code("CXR004", SCHEME, "Threshold guarantee"),
        "lower_bound": Code("CXR005", SCHEME, "Guarantee lower bound"),
        "approval": Code("CXR006", SCHEME, "Threshold approval status"),
        "positive": Code("10828004", "SCT", "Positive"),
        "negative": Code("260385009", "SCT", "Negative"),
        "unit": Code("1", "UCUM", "no units"),
        "procedure": Code("399208008", "SCT", "Plain chest X-ray"),
        "not_calibrated": Code("CXR007", SCHEME, "Not calibrated (no call)"),
        "no_score": Code("CXR008", SCHEME, "No score (image unreadable)"),
    }


def _finding_code(finding: str) -> str:
    """A code value (at most 16 characters) for a finding name: CXRF + 8 hex of its sha256."""
    import hashlib

    return "CXRF" + hashlib.sha256(finding.encode()).hexdigest()[:8]


def _meaning(value: str) -> str:
    """A Code Meaning (LO): one line, no backslash, at most 64 bytes (chestxr/pacs/_dicom_text.py)."""
    return lo(value)


def model_identity(run: Run) -> dict[str, str]:
    """name, version and weights hash of ``run``, for the SR's algorithm identification."""
    meta = run.metadata
    return {
        "name": f"chestxr {meta.backbone} ({run.run_dir.name})",
        "version": str(meta.version),
        "weights_sha256": str(meta.weights_sha256 or "unknown"),
    }


def derived_uid(*parts: str) -> str:
    """A new UID, the same for the same ``parts`` (pydicom's prefix + a hash of them)."""
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=["chestxr", *map(str, parts)]))


def build_sr(
    evidence: Sequence[Any],
    *,
    identity: Mapping[str, str],
    points: Sequence[OperatingPoint],
    approval: ApprovalStatus,
    study_probs: Mapping[str, float],
    study_calls: Mapping[str, str],
    image_probs: Mapping[str, Mapping[str, float]],
    study_reduce: str = "max",
) -> Any:
    """The study's Comprehensive SR (a ``highdicom.sr.ComprehensiveSR`` pydicom Dataset).

    evidence: headers of the study's predicted images (all one study); identity: name, version and
    weights_sha256 of the model (:func:`model_identity`); study_probs / study_calls:
    finding -> the study's probability / call as study_predictions.csv has them ("positive", "negative",
    "not calibrated", "no score"); image_probs: SOPInstanceUID -> finding -> probability; points: the run's
    operating point per finding, in order (:attr:`chestxr.runs.Run.operating_points`: the threshold the calls
    were made at and its guarantee); approval: the run's sign-off as it stands.
    """
    require("highdicom")
    from highdicom.sr import (
        AlgorithmIdentification,
        CodedConcept,
        ComprehensiveSR,
        DeviceObserverIdentifyingAttributes,
        Measurement,
        MeasurementReport,
        MeasurementsAndQualitativeEvaluations,
        ObservationContext,
        ObserverContext,
        QualitativeEvaluation,
        SourceImageForMeasurement,
        SourceImageForMeasurementGroup,
        TrackingIdentifier,
    )
    from pydicom.sr.codedict import codes

    from chestxr import __version__

    c = _codes()
    if not evidence:
        raise ValueError("an SR needs at least one source image")
    study_uid = str(evidence[0].StudyInstanceUID)
    sop_uids = sorted(str(ds.SOPInstanceUID) for ds in evidence)
    ident = dict(identity)
    params = [text(f"weights_sha256={ident['weights_sha256']}"), text(f"study_reduce={study_reduce}")]
    stated = guarantee_statement(points)  # the joint level and the prevalence range, in words (UT, one line)
    if stated:
        params.append(text(f"guarantees: {stated}"))
    algorithm = AlgorithmIdentification(
        name=text(ident["name"]),
        version=text(f"model v{ident['version']} (chestxr {__version__})"),
        parameters=params,
    )
    device = ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
            uid=derived_uid("device", ident["weights_sha256"]),
            name=text(ident["name"]),
            manufacturer_name="chestxr",
            model_name=text(f"model v{ident['version']}"),
        ),
    )
    by_uid = {str(ds.SOPInstanceUID): ds for ds in evidence}
    approval_code = CodedConcept(f"A-{approval.state.upper()}"[:16], SCHEME, _meaning(approval.short()))
    groups = []
    for point in points:
        f = point.finding
        guarantee = point.guarantee
        prob = float(study_probs[f])
        measurements = [Measurement(name=c["probability"], value=prob, unit=c["unit"], algorithm_id=algorithm)]
        if point.calibrated:  # a finding calibration refused has no threshold: it calls nothing
            measurements.append(Measurement(name=c["threshold"], value=float(point.threshold), unit=c["unit"]))
        for uid in sop_uids:
            if uid in image_probs:
                ref = SourceImageForMeasurement.from_source_image(by_uid[uid])
                measurements.append(
                    Measurement(
                        name=c["probability"],
                        value=float(image_probs[uid][f]),
                        unit=c["unit"],
                        algorithm_id=algorithm,
                        referenced_images=[ref],
                    )
                )
        if guarantee is not None and guarantee.lower_bound is not None:
            measurements.append(Measurement(name=c["lower_bound"], value=float(guarantee.lower_bound), unit=c["unit"]))
        code, meaning = (guarantee.code(), guarantee.summary(64)) if guarantee is not None else ("NONE", "no guarantee")
        guarantee_code = CodedConcept(f"G-{code}", SCHEME, _meaning(meaning))
        call = c.get(str(study_calls.get(f, "")).replace(" ", "_"), c["not_calibrated"])
        evaluations = [
            QualitativeEvaluation(c["call"], call),
            QualitativeEvaluation(c["guarantee"], guarantee_code),
            QualitativeEvaluation(c["approval"], approval_code),
        ]
        groups.append(
            MeasurementsAndQualitativeEvaluations(
                tracking_identifier=TrackingIdentifier(
                    uid=derived_uid("tracking", study_uid, f, ident["weights_sha256"]), identifier=text(f)
                ),
                finding_type=CodedConcept(_finding_code(f), SCHEME, _meaning(f)),
                algorithm_id=algorithm,
                measurements=measurements,
                qualitative_evaluations=evaluations,
                source_images=[SourceImageForMeasurementGroup.from_source_image(by_uid[u]) for u in sop_uids],
            )
        )
    # TID 1600 image library entries need PatientOrientation and ImagerPixelSpacing (2 values each);
    # images without them are still referenced by the evidence, each measurement and each group.
    library = [
        by_uid[u]
        for u in sop_uids
        if len(by_uid[u].get("PatientOrientation") or []) == 2 and len(by_uid[u].get("ImagerPixelSpacing") or []) == 2
    ]
    key = [study_uid, ident["weights_sha256"], ident["version"], *sop_uids]
    with warnings.catch_warnings():  # highdicom's warnings quote header values (names): never print them
        warnings.simplefilter("ignore")
        report = MeasurementReport(
            observation_context=ObservationContext(observer_device_context=device),
            procedure_reported=c["procedure"],
            imaging_measurements=groups,
            referenced_images=library or None,
        )
        sr = ComprehensiveSR(
            evidence=[by_uid[u] for u in sop_uids],
            content=report,
            series_instance_uid=derived_uid("sr-series", *key),
            series_number=SERIES_NUMBER,
            sop_instance_uid=derived_uid("sr", *key),
            instance_number=1,
            manufacturer="chestxr",
            is_complete=True,
            is_final=False,
            is_verified=False,
        )
    sr.SeriesDescription = SERIES_DESCRIPTION
    sr.SoftwareVersions = f"chestxr {__version__}"
    return set_character_set(sr)  # UTF-8 when a name (finding, reviewer, patient) is not ASCII
