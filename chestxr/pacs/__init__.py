"""Into and out of a hospital PACS: DICOMweb pull (QIDO-RS/WADO-RS), a DIMSE C-STORE listener, and
DICOM Structured Reports / Secondary Capture heat maps pushed back (STOW-RS or C-STORE).

This floor sits above :mod:`chestxr.runs` (it reuses the predict workflow and its reports); nothing below
imports it. The libraries it needs (highdicom, pynetdicom, dicomweb-client) are the ``pacs`` extra:
``pip install 'chestxr[pacs]'``; :func:`require` turns their absence into one readable line.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from chestxr.core.errors import PacsError

_PIP_NAME = {"highdicom": "highdicom", "pynetdicom": "pynetdicom", "dicomweb_client": "dicomweb-client"}


def require(module: str) -> ModuleType:
    """Import ``module`` (highdicom, pynetdicom or dicomweb_client) or raise PacsError naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise PacsError(
            f"the PACS features need the Python package {_PIP_NAME.get(module, module)!r}; "
            "install them with: pip install 'chestxr[pacs]'"
        ) from None
