"""Identifiers: one comparison rule for patient IDs, and one keyed hasher for every name chestxr derives
from an identifier.

Comparison rule (overlap and split checks, bootstrap clusters, study keys): IDs are compared after
:func:`normalize_id`, i.e. trimmed of surrounding whitespace and case-folded, so ``" p001"``, ``"P001"``
and ``"p001 "`` are the same patient. Other characters (inner spaces, leading zeros, punctuation) are kept.

Keyed hashes (:class:`KeyedHasher`): HMAC-SHA256 under a secret key of at least 128 bits (256 when chestxr
makes it), so a hash reveals nothing to someone without the key: testing a guessed ID (or a whole 8-digit
MRN space) is a guess of the key. Used for a run's hashed training patients (the key in
``RUN/patient_hash.key``, :mod:`chestxr.runs`), the study keys of files predicted without a manifest
(a fresh key per call, :mod:`chestxr.imaging`) and the names of received DICOM instances and studies
(:mod:`chestxr.pacs`; the listener keeps its key in its journal). A key file holds the key as hex, mode 0600.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Optional

if TYPE_CHECKING:
    import numpy as np

from chestxr.core._fileio import write_bytes_atomic

#: keys shorter than this (bytes) are refused: a short key can be guessed
MIN_KEY_BYTES = 16


def normalize_id(value: object) -> str:
    """The form IDs are compared in: ``str(value).strip().casefold()``."""
    return str(value).strip().casefold()


def normalize_ids(values: Iterable[object]) -> "np.ndarray":
    """:func:`normalize_id` of every value, shape (N,) object array; each distinct value is
    normalised once (a 1M-row manifest has ~300k patients), so this is ~3x faster than a loop."""
    import numpy as np
    import pandas as pd

    arr = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=object)
    if arr.size == 0:
        return arr
    codes, uniques = pd.factorize(arr, use_na_sentinel=False)
    normed = np.array([normalize_id(u) for u in uniques], dtype=object)
    return normed[codes]


class KeyedHasher:
    """HMAC-SHA256 hex digests under a secret key (a fresh random 256-bit key unless one is given).

    ``digest(value, length)`` is the first ``length`` hex characters of HMAC-SHA256(key, value);
    ``key_id`` is a short public fingerprint of the key (which key file belongs to which record).
    """

    def __init__(self, key: Optional[bytes] = None) -> None:
        key = secrets.token_bytes(32) if key is None else bytes(key)
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"key too short ({len(key)} bytes, at least {MIN_KEY_BYTES})")
        self._key = key

    @property
    def key(self) -> bytes:
        return self._key

    @property
    def key_id(self) -> str:
        """sha256 of the key (domain-separated), 16 hex: tells which key a record was hashed with."""
        return hashlib.sha256(b"chestxr-key-id:" + self._key).hexdigest()[:16]

    def digest(self, value: str, length: int = 64) -> str:
        """The first ``length`` hex characters of HMAC-SHA256(key, ``value`` as UTF-8)."""
        return hmac.new(self._key, value.encode("utf-8"), hashlib.sha256).hexdigest()[:length]

    @classmethod
    def from_file(cls, path: str | Path, *, create: bool = False) -> Optional["KeyedHasher"]:
        """The hasher whose key is stored (hex) in ``path``; with ``create`` a new key is written there
        (mode 0600) when the file is absent, else None is returned for an absent file.

        Raises ValueError (the reason) when the file holds no valid key."""
        path = Path(path)
        if not path.is_file():
            if not create:
                return None
            hasher = cls()
            write_bytes_atomic(path, hasher.key.hex().encode("ascii") + b"\n", secret=True)
            return hasher
        try:
            key = bytes.fromhex(path.read_text(encoding="ascii").strip())
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"not a chestxr key file ({exc})") from None
        return cls(key)
