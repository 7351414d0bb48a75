"""One keyed hasher (issue 21.6): HMAC-SHA256 under a secret key, used for training-patient hashes, the study
keys of files predicted without a manifest and the names of received DICOM instances."""

from __future__ import annotations

import hashlib
import hmac
import stat

import pytest

from chestxr.core import KeyedHasher, normalize_id


def test_digest_is_hmac_sha256_and_the_key_file_is_private(tmp_path):
    key = bytes(range(32))
    h = KeyedHasher(key)
    assert h.digest("P001", 32) == hmac.new(key, b"P001", hashlib.sha256).hexdigest()[:32]
    assert h.key_id == hashlib.sha256(b"chestxr-key-id:" + key).hexdigest()[:16]
    assert KeyedHasher().digest("P001") != KeyedHasher().digest("P001")  # a fresh random key each time
    with pytest.raises(ValueError, match="too short"):
        KeyedHasher(b"short")
    path = tmp_path / "k" / "key"
    assert KeyedHasher.from_file(path) is None
    made = KeyedHasher.from_file(path, create=True)
    assert made is not None and stat.S_IMODE(path.stat().st_mode) == 0o600
    again = KeyedHasher.from_file(path)
    assert again is not None and again.key == made.key and len(made.key) == 32
    path.write_text("not hex")
    with pytest.raises(ValueError, match="not a chestxr key file"):
        KeyedHasher.from_file(path)


def test_the_three_users_share_it(tmp_path):
    from chestxr.pacs import Keyer
    from chestxr.runs import hash_patients

    key = bytes(range(32))
    assert hash_patients([" p001 "], key) == [KeyedHasher(key).digest(normalize_id("P001"), 32)]
    keyer = Keyer(key)
    assert keyer.instance("1.2.3") == KeyedHasher(key).digest("sop\x1f1.2.3", 16)
    persistent = Keyer.persistent(tmp_path)
    assert Keyer.persistent(tmp_path).instance("1.2.3") == persistent.instance("1.2.3")
