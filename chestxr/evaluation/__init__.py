"""Floor 4, statistics on scores (imports chestxr.core): per-finding metrics with stated intervals
(Clopper-Pearson / Wilson, effective counts by patient, patient bootstrap, DeLong), operating points
(:class:`OperatingPoint` with its :class:`Guarantee`, fitted by :func:`fit_thresholds`: guaranteed rules by
fixed-sequence testing, point rules), the one decision rule (:func:`decide`: threshold calls, argmax for
mutually exclusive classes, abstain), the checks of stored operating points on a test split (a guaranteed
promise: one-sided test by patient, Holm across findings, "not contradicted" with its power; a point rule: a
two-sample test by patient, "moved"), planning (:func:`plan`: cases a guaranteed rule needs), probability
calibration, reliability bins and ECE, and subgroup metrics. ``evaluate_predictions`` is everything the
evaluation report shows."""

from __future__ import annotations

from chestxr.evaluation._bootstrap import (
    BOOT_KEYS,
    MIN_VALID_FRACTION,
    bootstrap_intervals,
    bootstrap_metrics,
    bootstrap_replicates,
    draw_resample_counts,
    group_index,
    weighted_auroc,
)
from chestxr.evaluation._decisions import ABSTAIN, ABSTAIN_LABEL, NO_SCORE, Decisions, decide
from chestxr.evaluation._evaluate import evaluate_predictions
from chestxr.evaluation._guarantee_rules import (
    GUARANTEED_KINDS,
    GuaranteedChoice,
    RuleFamily,
    allocate_family,
    check_prevalence,
    choose_threshold,
    feasibility,
    predictive_bound,
)
from chestxr.evaluation._intervals import (
    INTERVAL_METHODS,
    IntervalError,
    clopper_pearson,
    confusion_intervals,
    effective_counts,
    lower_bound,
    n_needed,
    proportion_interval,
    proportion_record,
    upper_bound,
    wilson,
)
from chestxr.evaluation._methods import ALLOWED_FORMS, TARGETED, Method, parse_method
from chestxr.evaluation._metrics import (
    METRIC_NAMES,
    MetricInputError,
    UndefinedMetricWarning,
    auroc,
    average_precision,
    binary_metrics_at,
    delong_ci,
    multiclass_metrics,
    rates_from_counts,
)
from chestxr.evaluation._operating_point import (
    NOT_CALIBRATED,
    STATUSES,
    UNCALIBRATED_RUN,
    EceChange,
    Guarantee,
    OperatingPoint,
    PatientTally,
    guarantee_statement,
)
from chestxr.evaluation._patient_bounds import (
    PatientCounts,
    patient_counts,
    patients_needed,
    success_lower_bound,
)
from chestxr.evaluation._planning import Plan, PlanRow, plan, plan_command
from chestxr.evaluation._probability import (
    ProbabilityCalibrator,
    RefusedCalibrationWarning,
    SmallSampleWarning,
    compare_ece,
    fit_probability_calibrator,
)
from chestxr.evaluation._promise import (
    DEFAULT_ALPHA,
    binomial_tail_below,
    check_bound,
    check_promise,
    check_promises,
    finding_counts,
    promise_summary,
)
from chestxr.evaluation._promise_checks import (
    HolmResult,
    TwoSample,
    holm,
    patients_for_power,
    promise_power,
    two_sample_test,
)
from chestxr.evaluation._reliability import MIN_BIN_COUNT, ReliabilityBins, expected_calibration_error, reliability_bins
from chestxr.evaluation._subgroups import interval_methods, subgroup_metrics
from chestxr.evaluation._thresholds import InsufficientDataWarning, fit_threshold, fit_thresholds, resolve_methods

__all__ = [
    "ABSTAIN",
    "ABSTAIN_LABEL",
    "ALLOWED_FORMS",
    "BOOT_KEYS",
    "DEFAULT_ALPHA",
    "Decisions",
    "EceChange",
    "GUARANTEED_KINDS",
    "Guarantee",
    "GuaranteedChoice",
    "HolmResult",
    "INTERVAL_METHODS",
    "InsufficientDataWarning",
    "IntervalError",
    "METRIC_NAMES",
    "MIN_BIN_COUNT",
    "MIN_VALID_FRACTION",
    "Method",
    "MetricInputError",
    "NOT_CALIBRATED",
    "NO_SCORE",
    "OperatingPoint",
    "PatientCounts",
    "PatientTally",
    "Plan",
    "PlanRow",
    "ProbabilityCalibrator",
    "RefusedCalibrationWarning",
    "ReliabilityBins",
    "RuleFamily",
    "STATUSES",
    "SmallSampleWarning",
    "TARGETED",
    "TwoSample",
    "UNCALIBRATED_RUN",
    "UndefinedMetricWarning",
    "allocate_family",
    "auroc",
    "average_precision",
    "binary_metrics_at",
    "binomial_tail_below",
    "bootstrap_intervals",
    "bootstrap_metrics",
    "bootstrap_replicates",
    "check_bound",
    "check_prevalence",
    "check_promise",
    "check_promises",
    "choose_threshold",
    "clopper_pearson",
    "compare_ece",
    "confusion_intervals",
    "decide",
    "delong_ci",
    "draw_resample_counts",
    "effective_counts",
    "evaluate_predictions",
    "expected_calibration_error",
    "feasibility",
    "finding_counts",
    "fit_probability_calibrator",
    "fit_threshold",
    "fit_thresholds",
    "group_index",
    "guarantee_statement",
    "holm",
    "interval_methods",
    "lower_bound",
    "multiclass_metrics",
    "n_needed",
    "parse_method",
    "patient_counts",
    "patients_for_power",
    "patients_needed",
    "plan",
    "plan_command",
    "predictive_bound",
    "promise_power",
    "promise_summary",
    "proportion_interval",
    "proportion_record",
    "rates_from_counts",
    "reliability_bins",
    "resolve_methods",
    "subgroup_metrics",
    "success_lower_bound",
    "two_sample_test",
    "upper_bound",
    "weighted_auroc",
    "wilson",
]
