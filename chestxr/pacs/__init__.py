"""Floor 8 (the top floor but the CLI), into and out of a hospital PACS: DICOMweb pull (QIDO-RS/WADO-RS), a
DIMSE C-STORE listener with a journal, DICOM Structured Reports and Secondary Capture heat maps pushed back
(STOW-RS or C-STORE). It reuses the predict workflow of :mod:`chestxr.runs`; nothing below imports it. The
libraries it needs (highdicom, pynetdicom, dicomweb-client) are the ``pacs`` extra: ``pip install
'chestxr[pacs]'``; :func:`require` turns their absence into one readable line."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chestxr.core import lazy_face

if TYPE_CHECKING:
    from chestxr.pacs._credentials import Credentials, load_credentials
    from chestxr.pacs._dicomweb import DicomWeb
    from chestxr.pacs._dimse import Node, c_store, parse_node
    from chestxr.pacs._extras import require
    from chestxr.pacs._heatmaps import build_heatmap_sc
    from chestxr.pacs._journal import Journal
    from chestxr.pacs._listener import Listener, setup_logging
    from chestxr.pacs._process import StudyResult, predict_staging
    from chestxr.pacs._pull import predict_dicomweb
    from chestxr.pacs._sr import build_sr, model_identity
    from chestxr.pacs._staging import IMAGE_SOP_CLASSES, Keyer, screen_study

__all__ = [
    "IMAGE_SOP_CLASSES",
    "Credentials",
    "DicomWeb",
    "Journal",
    "Keyer",
    "Listener",
    "Node",
    "StudyResult",
    "build_heatmap_sc",
    "build_sr",
    "c_store",
    "load_credentials",
    "model_identity",
    "parse_node",
    "predict_dicomweb",
    "predict_staging",
    "require",
    "screen_study",
    "setup_logging",
]

__getattr__, __dir__ = lazy_face(__name__, __file__, __all__)
