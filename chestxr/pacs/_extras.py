"""The PACS floor's optional libraries (the ``pacs`` extra): highdicom, pynetdicom, dicomweb-client.

:func:`require` imports one of them or turns its absence into one readable line naming the extra.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from chestxr.core import PacsError

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
