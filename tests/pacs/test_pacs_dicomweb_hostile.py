"""``predict --dicomweb`` against what a real archive (or something pretending to be one) sends (issue 24.4).

A malformed or empty ``--study`` is refused before any traffic (real Orthanc: ``--study ""`` used to select
every study it holds). Small local fakes (tests/dicomweb_fakes.py) play the hostile servers: one study's
WADO answering 404 is skipped and listed under ``--on-bad-image skip`` and is one line + exit 2 otherwise,
naming the study by its keyed hash; a body dripping one byte at a time meets the overall deadline of
``--timeout``; a redirect to another host is refused (nothing reaches that host); malformed QIDO/WADO answers
(a list of strings, text/html, zero multipart parts, a part that is not DICOM, another study's instances)
are one-line errors.
"""

from __future__ import annotations

import json
import re
import time

import pandas as pd
import pydicom
import pytest

pytest.importorskip("dicomweb_client")

from dicomweb_fakes import BOUNDARY, FakeDicomWeb  # noqa: E402
from pacs_helpers import make_run, synthetic_studies  # noqa: E402

from chestxr.cli import main  # noqa: E402
from chestxr.pacs import Keyer  # noqa: E402

STUDY_KEY = re.compile(r"study-[0-9a-f]{12}")


@pytest.fixture(scope="module")
def pacs_run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("hostile_run") / "run")


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    by_study = synthetic_studies(tmp_path_factory.mktemp("hostile_studies"), n_images=6)
    assert len(by_study) >= 2
    return by_study


def cli(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    cap = capsys.readouterr()
    return code, cap.out + cap.err


def predict(capsys, run, url, out, *extra: str) -> tuple[int, str]:
    return cli(
        capsys, "predict", "--checkpoint", str(run), "--dicomweb", url, "--out", str(out), "--workers", "0", *extra
    )


def one_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


# --- --study: empty or malformed is refused (real Orthanc) -----------------------------------------------


@pytest.fixture()
def loaded(orthanc, studies, monkeypatch):
    orthanc.clear()
    for files in studies.values():
        for f in files:
            orthanc.upload(f)
    for k, v in orthanc.env.items():
        monkeypatch.setenv(k, v)
    return orthanc


@pytest.mark.parametrize("value", ["", " ", "*", "1.2.840*", "1.2.3,1.2.4", "1.2..3", "1.2.3.", "abc", "1." + "2" * 70])
def test_empty_or_malformed_study_is_refused(value, loaded, pacs_run, tmp_path, capsys):
    out = tmp_path / "out"
    code, text = predict(capsys, pacs_run, loaded.dicomweb, out, "--study", value)
    line = one_line(text)
    assert code == 2 and "--study" in line, text
    assert not out.exists()


def test_a_wellformed_study_uid_still_selects_only_it(loaded, studies, pacs_run, tmp_path, capsys):
    first = sorted(studies)[0]
    code, text = predict(capsys, pacs_run, loaded.dicomweb, tmp_path / "one", "--study", f" {first} ")
    assert code == 0, text
    assert len(pd.read_csv(tmp_path / "one" / "study_predictions.csv")) == 1


# --- one study's WADO fails ------------------------------------------------------------------------------


def _failing(uid: str):
    def misbehave(handler, kind, asked):
        if kind == "wado" and asked == uid:
            handler.send_body(b"no such study", "text/plain", status=404)
            return True
        return False

    return misbehave


def test_one_study_404_is_skipped_and_listed_under_skip(studies, pacs_run, tmp_path):
    from chestxr.imaging import LoaderOptions
    from chestxr.pacs import predict_dicomweb

    bad = sorted(studies)[0]
    keyer = Keyer(b"s" * 32)
    bad_key = keyer.study(pydicom.dcmread(studies[bad][0], stop_before_pixels=True))
    out = tmp_path / "pull"
    with FakeDicomWeb(studies, _failing(bad)) as server, pytest.warns(UserWarning, match="1 of .* not retrieved"):
        predict_dicomweb(
            pacs_run, server.url, out, keyer=keyer, loading=LoaderOptions(num_workers=0, on_bad_image="skip")
        )
    skipped = pd.read_csv(out / "skipped.csv")
    row = skipped[skipped["path"] == bad_key]
    assert len(row) == 1 and "HTTP 404" in row["reason"].iloc[0], skipped
    predicted = pd.read_csv(out / "study_predictions.csv")
    assert len(predicted) == len(studies) - 1
    images = pd.read_csv(out / "predictions.csv")
    assert not images["image_id"].str.startswith(bad_key).any()


def test_one_study_404_is_one_line_and_exit_2_otherwise(studies, pacs_run, tmp_path, capsys):
    bad = sorted(studies)[-1]
    out = tmp_path / "pull"
    with FakeDicomWeb(studies, _failing(bad)) as server:
        code, text = predict(capsys, pacs_run, server.url, out)  # --on-bad-image error is the CLI default
    line = one_line(text)
    assert code == 2 and "HTTP 404" in line and STUDY_KEY.search(line) and "--on-bad-image skip" in line, line
    assert bad not in text  # named by its keyed hash, never by its UID
    assert not out.exists() and [p for p in tmp_path.iterdir()] == []
    # and from the CLI with skip: exit 0, the study listed
    with FakeDicomWeb(studies, _failing(bad)) as server, pytest.warns(UserWarning, match="not retrieved") as warned:
        code, text = predict(capsys, pacs_run, server.url, out, "--on-bad-image", "skip")
    assert code == 0, text
    assert bad not in text and not any(bad in str(w.message) for w in warned)
    skipped = pd.read_csv(out / "skipped.csv")
    assert skipped["path"].str.fullmatch(STUDY_KEY).sum() == 1


# --- an overall deadline per request ---------------------------------------------------------------------


@pytest.mark.parametrize("where", ["qido", "wado"])
def test_a_server_dripping_bytes_meets_the_overall_deadline(where, studies, pacs_run, tmp_path, capsys):
    """One byte per second never leaves a read idle for --timeout 2.5 s; the whole request still must end by then."""
    started: list[float] = []

    def misbehave(handler, kind, uid):
        if kind != where:
            return False
        started.append(time.monotonic())
        if kind == "qido":
            body = json.dumps(handler.fake.qido(None)).encode()
            handler.drip(body[:12], every=1.0)  # at most 12 s of dripping, then the connection closes
        else:
            handler.drip(b"x" * 12, every=1.0, content_type=f"multipart/related; boundary={BOUNDARY}")
        handler.close_connection = True
        return True

    out = tmp_path / "pull"
    with FakeDicomWeb(studies, misbehave) as server:
        code, text = predict(capsys, pacs_run, server.url, out, "--timeout", "2.5")
    assert started, "the fake was never asked"
    took = time.monotonic() - started[0]
    line = one_line(text)
    assert code == 2 and "no answer within 2.5 s" in line, line
    assert took < 2.5 + 3.0, f"the request ran {took:.1f} s past a 2.5 s deadline"
    assert not out.exists()


# --- redirects ---------------------------------------------------------------------------------------------


def test_a_redirect_to_another_host_is_refused(studies, pacs_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CHESTXR_PACS_USER", "alice")
    monkeypatch.setenv("CHESTXR_PACS_PASSWORD", "secret-pw-9")
    with FakeDicomWeb(studies) as other:

        def misbehave(handler, kind, uid):
            handler.send_body(b"", "text/plain", status=302, headers={"Location": other.url + handler.path[10:]})
            return True

        with FakeDicomWeb(studies, misbehave) as server:
            code, text = predict(capsys, pacs_run, server.url, tmp_path / "pull")
        assert other.requests == []  # nothing (no credentials, no query) reached the other host
    line = one_line(text)
    assert code == 2 and "redirect" in line and "another" in line, line
    assert "secret-pw-9" not in text and not (tmp_path / "pull").exists()


def test_a_redirect_on_the_same_server_is_followed(studies, pacs_run, tmp_path, capsys):
    def misbehave(handler, kind, uid):
        if handler.path.startswith("/moved/"):
            return False
        handler.send_body(b"", "text/plain", status=307, headers={"Location": "/moved" + handler.path})
        return True

    with FakeDicomWeb(studies, misbehave) as server:
        code, text = predict(capsys, pacs_run, server.url, tmp_path / "pull")
    assert code == 0, text
    assert len(pd.read_csv(tmp_path / "pull" / "study_predictions.csv")) == len(studies)


# --- malformed answers -------------------------------------------------------------------------------------


def _answer(where: str, body: bytes, content_type: str):
    def misbehave(handler, kind, uid):
        if kind != where:
            return False
        handler.send_body(body, content_type)
        return True

    return misbehave


def _other_study(handler, kind, uid):
    if kind != "wado":
        return False
    others = [u for u in handler.fake.studies if u != uid]
    handler.send_multipart([f.read_bytes() for f in handler.fake.studies[others[0]]])
    return True


MALFORMED = {
    "qido-list-of-strings": (_answer("qido", b'["1.2.3", "1.2.4"]', "application/dicom+json"), "study search"),
    "qido-text-html": (_answer("qido", b"<html><body>Sign in</body></html>", "text/html"), "study search"),
    "qido-json-number": (_answer("qido", b"42", "application/dicom+json"), "study search"),
    "qido-no-uid": (_answer("qido", b'[{"00100020": {"vr": "LO", "Value": ["P"]}}]', "application/json"), "study"),
    "qido-bad-uid": (
        _answer("qido", b'[{"0020000D": {"vr": "UI", "Value": ["*"]}}]', "application/dicom+json"),
        "study search",
    ),
    "wado-zero-parts": (
        _answer(
            "wado", f"--{BOUNDARY}--\r\n".encode(), f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
        ),
        "retrieval",
    ),
    "wado-empty-body": (
        _answer("wado", b"", f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'),
        "retrieval",
    ),
    "wado-text-html": (_answer("wado", b"<html>maintenance</html>", "text/html"), "retrieval"),
    "wado-not-dicom": (
        _answer(
            "wado",
            f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\nhello\r\n--{BOUNDARY}--\r\n".encode(),
            f'multipart/related; type="application/dicom"; boundary={BOUNDARY}',
        ),
        "retrieval",
    ),
    "wado-another-study": (_other_study, "retrieval"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_answers_are_one_line_errors(case, studies, pacs_run, tmp_path, capsys):
    misbehave, operation = MALFORMED[case]
    out = tmp_path / "pull"
    with FakeDicomWeb(studies, misbehave) as server:
        code, text = predict(capsys, pacs_run, server.url, out)
    line = one_line(text)
    assert code == 2 and server.url in line and operation in line, line
    assert not any(uid in text for uid in studies)
    assert not out.exists() and list(tmp_path.iterdir()) == []


# --- odd option values (issue 24.6) ------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["nan", "inf", "0", "-1", "1e9"])
def test_timeout_must_be_a_positive_finite_number(value, pacs_run, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(
            ["predict", "--checkpoint", str(pacs_run), "--dicomweb", "http://127.0.0.1:9/x", "--out", "o"]
            + ["--timeout", value]
        )
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --timeout: {value} is out of range" in err.strip().splitlines()[-1] and "Traceback" not in err


@pytest.mark.parametrize(
    "url", ["http://[::1", "http://127.0.0.1:99999/dicom-web", "http://[fe80::1%zz/x", "ftp://h/x"]
)
def test_malformed_urls_are_one_line(url, pacs_run, tmp_path, capsys):
    code, text = predict(capsys, pacs_run, url, tmp_path / "o")
    line = one_line(text)
    assert code == 2 and "--dicomweb" in line, line
