"""PACS credentials come from the environment or a file, never show in repr/str, and bad ones fail in one line;
a missing PACS library names the extra to install."""

from __future__ import annotations

import os
import sys

import pytest

from chestxr.core import PacsError
from chestxr.pacs import Credentials, load_credentials, require


def test_env_token_then_basic_then_none():
    assert load_credentials(env={"CHESTXR_PACS_TOKEN": "tok-123"}).kind == "bearer"
    c = load_credentials(env={"CHESTXR_PACS_USER": "u", "CHESTXR_PACS_PASSWORD": "pw-secret"})
    assert (c.kind, c.user, c.secret) == ("basic", "u", "pw-secret")
    assert load_credentials(env={}) == Credentials()
    with pytest.raises(PacsError, match="CHESTXR_PACS_PASSWORD is not"):
        load_credentials(env={"CHESTXR_PACS_USER": "u"})


def test_secret_never_in_repr_and_applied_to_a_session():
    import requests

    c = load_credentials(env={"CHESTXR_PACS_USER": "u", "CHESTXR_PACS_PASSWORD": "pw-secret"})
    assert "pw-secret" not in repr(c) and "pw-secret" not in str(c) and "***" in repr(c)
    s = requests.Session()
    c.apply(s)
    assert s.auth == ("u", "pw-secret")
    t = load_credentials(env={"CHESTXR_PACS_TOKEN": "tok-123"})
    s2 = requests.Session()
    t.apply(s2)
    assert s2.headers["Authorization"] == "Bearer tok-123" and "tok-123" not in repr(t)


def test_file_forms_and_errors(tmp_path):
    f = tmp_path / "pacs.cred"
    f.write_text("# hospital PACS\nuser = alice\npassword: s3cr=t\n")
    os.chmod(f, 0o600)
    c = load_credentials(f, env={})
    assert (c.kind, c.user, c.secret) == ("basic", "alice", "s3cr=t") and "s3cr" not in repr(c)
    f.write_text("token: abc.def\n")
    assert load_credentials(env={"CHESTXR_PACS_CREDENTIALS": str(f)}).secret == "abc.def"
    f.write_text("passwd: x\n")
    with pytest.raises(PacsError, match="line 1: unknown key 'passwd'"):
        load_credentials(f, env={})
    f.write_text("user: bob\n")
    with pytest.raises(PacsError, match="neither"):
        load_credentials(f, env={})
    with pytest.raises(PacsError, match="cannot read the credentials file"):
        load_credentials(tmp_path / "missing", env={})
    f.write_text("token: t\n")
    os.chmod(f, 0o644)
    with pytest.warns(UserWarning, match="chmod 600"):
        load_credentials(f, env={})


def test_missing_library_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "highdicom", None)  # what an absent package looks like to import
    with pytest.raises(PacsError) as err:
        require("highdicom")
    assert "pip install 'chestxr[pacs]'" in str(err.value) and "\n" not in str(err.value)


def test_cli_refuses_credentials_in_the_url_and_store_without_dicomweb(capsys, tmp_path):
    from chestxr.cli import main

    code = main(["predict", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "o"), str(tmp_path), "--store-sr"])
    assert code == 2 and "need --dicomweb" in capsys.readouterr().err
