"""Floor 6, the run folder and the workflows on it (imports every floor below): the one home of the run folder
(:class:`RunFolder`; typed model.json :class:`RunMetadata` and its records; model files; --resume state and
recipe check; training-patient keyed hashes; thresholds.json as a :class:`CalibrationResult`), :func:`train`
(the run-folder contract around chestxr.modeling's training loop), the :class:`Run` users hold (never stale), and
calibrate / evaluate / predict / approve / card / export on it, each returning a typed result."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chestxr.core import lazy_face

if TYPE_CHECKING:
    from chestxr.runs._approval import (
        BOUND_PARTS,
        ApprovalStatus,
        approval_status,
        approve_run,
        banner,
        binding_hmac,
        bound_parts,
        part_digests,
        require_approval,
    )
    from chestxr.runs._calibrate import calibrate_run, keep_previous_thresholds, plan_calibration, read_thresholds
    from chestxr.runs._card import card_run, data_summary
    from chestxr.runs._checkpoint import load_model, read_metadata, save_model, update_metadata
    from chestxr.runs._evaluate import EvaluationResult, evaluate_run, read_evaluation
    from chestxr.runs._export import (
        FORMATS,
        bundle_metadata,
        export_model,
        export_monai_bundle,
        inference_config,
        sidecar_path,
    )
    from chestxr.runs._folder import (
        MAX_JSON_BYTES,
        MAX_JSON_DEPTH,
        REFERENCE_PROFILE_FILE,
        RunFolder,
        is_run_folder,
        read_run_json,
    )
    from chestxr.runs._inference_log import (
        LOG_FILE,
        InferenceLog,
        InferenceLogWriter,
        LogEntry,
        LogError,
        LogHeader,
        decision_sha256,
        log_files,
        log_predictions,
        read_inference_logs,
        run_log_header,
    )
    from chestxr.runs._metadata import (
        Approval,
        ApprovedThreshold,
        CalibrationPlan,
        CalibrationResult,
        CalibrationSummary,
        HistoryEntry,
        PatientHashScheme,
        RunMetadata,
    )
    from chestxr.runs._observations import NUMERIC_FIELDS, Observations, call_codes, label_keys, observe_images
    from chestxr.runs._output_guard import (
        DEMO_MARKER,
        Protected,
        guard_output,
        guard_run_output,
        output_refusal,
        protected_inputs,
        refuse_run_folder,
    )
    from chestxr.runs._packed_run import PackedRun, load_packed, pack_run
    from chestxr.runs._patients import (
        Overlap,
        check_not_training_patients,
        hash_patients,
        legacy_patient_hashes,
        load_or_create_key,
        read_key,
        training_overlap,
        training_patient_record,
    )
    from chestxr.runs._predict import PredictionResult, predict_run
    from chestxr.runs._ray_predict import RayOptions
    from chestxr.runs._reference_profile import (
        MAX_PROFILE_IMAGES,
        SKETCH_DIM,
        ReferenceProfile,
        SketchProjection,
        build_reference_profile,
        load_reference_profile,
        profile_sha256,
    )
    from chestxr.runs._resume import (
        MAY_CHANGE,
        ElasticPlan,
        capture_rng_state,
        check_resume_recipe,
        elastic_plan,
        load_training_state,
        remove_marker,
        restart_count,
        save_training_state,
        write_marker,
    )
    from chestxr.runs._run import LabeledScores, Run, RunLike, RunPredictions, as_run, load_run
    from chestxr.runs._train import RunRecorder, build_metadata, train, write_metrics_csv, write_skipped

__all__ = [
    "BOUND_PARTS",
    "DEMO_MARKER",
    "FORMATS",
    "LOG_FILE",
    "MAX_JSON_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_PROFILE_IMAGES",
    "MAY_CHANGE",
    "NUMERIC_FIELDS",
    "REFERENCE_PROFILE_FILE",
    "SKETCH_DIM",
    "Approval",
    "ApprovalStatus",
    "ApprovedThreshold",
    "CalibrationPlan",
    "CalibrationResult",
    "CalibrationSummary",
    "ElasticPlan",
    "EvaluationResult",
    "HistoryEntry",
    "InferenceLog",
    "InferenceLogWriter",
    "LabeledScores",
    "LogEntry",
    "LogError",
    "LogHeader",
    "Observations",
    "Overlap",
    "PackedRun",
    "PatientHashScheme",
    "PredictionResult",
    "RayOptions",
    "Protected",
    "ReferenceProfile",
    "Run",
    "RunFolder",
    "RunLike",
    "RunMetadata",
    "RunPredictions",
    "RunRecorder",
    "SketchProjection",
    "approval_status",
    "approve_run",
    "as_run",
    "banner",
    "binding_hmac",
    "bound_parts",
    "build_metadata",
    "build_reference_profile",
    "bundle_metadata",
    "calibrate_run",
    "call_codes",
    "capture_rng_state",
    "card_run",
    "check_not_training_patients",
    "check_resume_recipe",
    "data_summary",
    "decision_sha256",
    "elastic_plan",
    "evaluate_run",
    "export_model",
    "export_monai_bundle",
    "guard_output",
    "guard_run_output",
    "hash_patients",
    "inference_config",
    "is_run_folder",
    "keep_previous_thresholds",
    "label_keys",
    "legacy_patient_hashes",
    "load_model",
    "load_or_create_key",
    "load_packed",
    "load_reference_profile",
    "load_run",
    "load_training_state",
    "log_files",
    "log_predictions",
    "observe_images",
    "output_refusal",
    "part_digests",
    "plan_calibration",
    "pack_run",
    "predict_run",
    "profile_sha256",
    "protected_inputs",
    "read_evaluation",
    "read_inference_logs",
    "read_key",
    "read_metadata",
    "read_run_json",
    "read_thresholds",
    "refuse_run_folder",
    "remove_marker",
    "require_approval",
    "restart_count",
    "run_log_header",
    "save_model",
    "save_training_state",
    "sidecar_path",
    "train",
    "training_overlap",
    "training_patient_record",
    "update_metadata",
    "write_marker",
    "write_metrics_csv",
    "write_skipped",
]

__getattr__, __dir__ = lazy_face(__name__, __file__, __all__)
