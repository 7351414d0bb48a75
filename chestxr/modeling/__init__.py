"""Floor 3, networks and how they learn (imports core, data, imaging): torchvision backbones (and small CNNs)
with a one-logit-per-finding head or one binary network per finding (one-vs-rest), pretrained backbone weights
from local files only, head surgery for fine-tuning on another finding list, the masked BCE loss, optimizer and
LR schedule, the engine (one training epoch, prediction with skipped images), the training loop :func:`fit`
(one module, top to bottom, reporting to a :class:`Recorder`), DDP glue and TensorBoard logging. Writes no
run folder: chestxr.runs does."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chestxr.core import lazy_face

if TYPE_CHECKING:
    from chestxr.modeling._architectures import BACKBONES, HeadLinear, ModelSpec, OneVsRest, SmallCNN, TinyCNN
    from chestxr.modeling._distributed import (
        DistInfo,
        GlobalBatchSampler,
        all_gather_objects,
        all_reduce_sum,
        barrier,
        check_ranks_agree,
        cleanup_distributed,
        decode_digest,
        setup_distributed,
        split_digest,
    )
    from chestxr.modeling._engine import (
        EpochStats,
        Predictions,
        mean_auroc,
        predict,
        resolve_amp,
        resolve_device,
        train_one_epoch,
    )
    from chestxr.modeling._heads import feature_heads, get_head, head_rows_for, reset_head, set_head, transfer_findings
    from chestxr.modeling._losses import (
        MaskedBCEWithLogitsLoss,
        compute_pos_weight,
        masked_bce_with_logits,
        resolve_pos_weight,
    )
    from chestxr.modeling._models import build_model, describe_model
    from chestxr.modeling._optim import LRSchedule, build_optimizer, build_scheduler, make_loss, pos_weight_for
    from chestxr.modeling._tensorboard import TensorBoardLogger
    from chestxr.modeling._training import (
        FitOptions,
        InitialWeights,
        Recorder,
        Resumed,
        TrainingResult,
        assemble_best,
        build_loaders,
        build_train_model,
        fit,
        seed_everything,
        update_ovr_best,
    )
    from chestxr.modeling._weights import (
        LoadReport,
        WeightsError,
        hub_cache_file,
        load_backbone_weights,
        read_state_dict,
        resolve_weights,
        sniff_format,
    )

__all__ = [
    "BACKBONES",
    "DistInfo",
    "EpochStats",
    "FitOptions",
    "GlobalBatchSampler",
    "HeadLinear",
    "InitialWeights",
    "LRSchedule",
    "LoadReport",
    "MaskedBCEWithLogitsLoss",
    "ModelSpec",
    "OneVsRest",
    "Predictions",
    "Recorder",
    "Resumed",
    "SmallCNN",
    "TensorBoardLogger",
    "TinyCNN",
    "TrainingResult",
    "WeightsError",
    "all_gather_objects",
    "all_reduce_sum",
    "assemble_best",
    "barrier",
    "build_loaders",
    "build_model",
    "build_optimizer",
    "build_scheduler",
    "build_train_model",
    "check_ranks_agree",
    "cleanup_distributed",
    "compute_pos_weight",
    "decode_digest",
    "describe_model",
    "fit",
    "feature_heads",
    "get_head",
    "head_rows_for",
    "hub_cache_file",
    "load_backbone_weights",
    "make_loss",
    "masked_bce_with_logits",
    "mean_auroc",
    "pos_weight_for",
    "predict",
    "read_state_dict",
    "reset_head",
    "resolve_amp",
    "resolve_device",
    "resolve_pos_weight",
    "resolve_weights",
    "seed_everything",
    "set_head",
    "setup_distributed",
    "sniff_format",
    "split_digest",
    "train_one_epoch",
    "transfer_findings",
    "update_ovr_best",
]

__getattr__, __dir__ = lazy_face(__name__, __file__, __all__)
