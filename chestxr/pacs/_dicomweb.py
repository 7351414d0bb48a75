"""A DICOMweb client (QIDO-RS search, WADO-RS retrieve, STOW-RS store) with one-line errors.

Wraps ``dicomweb_client.DICOMwebClient`` on a guarded ``requests.Session``
(chestxr/pacs/_guarded_session.py) carrying the :class:`~chestxr.pacs.Credentials`: each
request has an overall deadline of ``timeout`` seconds (a server dripping bytes cannot hold it longer), and
a redirect to another host is refused. Every failure becomes a :class:`~chestxr.core.PacsError`
that names the server and the operation and says what to do: unreachable, refused credentials (401/403),
no complete answer within ``timeout`` seconds, other HTTP errors, an answer that is not what DICOMweb
defines (not DICOM JSON, not multipart DICOM, another study's instances), or a store the server did not
accept. A failure that concerns one study only (HTTP 404, a malformed or empty answer) is a
:class:`StudyRetrieveError`, so a caller can skip that study and go on. Messages never hold the
credentials, the query (UIDs) or what the server sent back (only its content type); studies are named by
their keyed hash. dicomweb_client's own log lines (which can name UIDs) are silenced.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import re
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence, TypeVar
from urllib.parse import urlsplit

from chestxr.core import PacsError
from chestxr.pacs._credentials import Credentials
from chestxr.pacs._extras import require
from chestxr.pacs._guarded_session import RequestDeadline, guarded_session

STUDY_UID_TAG = "0020000D"
PATIENT_ID_TAG = "00100020"
SOP_UID_TAG = "00080018"
#: the largest --timeout accepted (one day): the deadline timer cannot take arbitrary floats
MAX_TIMEOUT_S = 86400.0
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_T = TypeVar("_T")


class _Malformed(ValueError):
    """What is wrong with an answer, in chestxr's own words (never quoting the server)."""


class StudyRetrieveError(PacsError):
    """One study could not be retrieved (HTTP error for it, a malformed or empty answer); ``key`` names it
    (keyed hash), ``reason`` says why (no UID, nothing the server sent)."""

    def __init__(self, message: str, *, key: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.key = key
        self.reason = reason or message


def check_uid(value: str, option: str = "--study") -> str:
    """``value`` stripped, when it is a DICOM UID (digits and dots, no empty component, at most 64
    characters); PacsError naming ``option`` otherwise. An empty value, a wildcard (``*``, ``?``) or a list
    (``a,b``) would make a QIDO search match other studies, or all of them."""
    uid = str(value).strip()
    if not uid:
        raise PacsError(f"{option} is empty: give a Study Instance UID (digits and dots), or leave {option} out")
    if len(uid) > 64 or not _UID.fullmatch(uid):
        shown = uid if len(uid) <= 70 else uid[:64] + "..."
        raise PacsError(
            f"{option} {shown!r} is not a UID: expected digits and dots, at most 64 characters, no wildcard "
            "(* ?) or list (,); copy the Study Instance UID (0020,000D) exactly"
        )
    return uid


def check_timeout(timeout: Any, option: str = "--timeout") -> float:
    """``timeout`` as a float in (0, MAX_TIMEOUT_S]; PacsError naming ``option`` otherwise."""
    try:
        value = float(timeout)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and 0 < value <= MAX_TIMEOUT_S):
        raise PacsError(f"{option} {timeout!r}: expected seconds, a number > 0 and <= {MAX_TIMEOUT_S:g}")
    return value


def _public_url(url: str) -> str:
    """``url`` checked: http(s), a host, a valid port, no user:password in it (credentials come from env/files)."""
    expected = "expected http(s)://HOST[:PORT]/PATH (e.g. http://pacs:8042/dicom-web)"
    try:
        parts = urlsplit(str(url).strip())
        host, _port = parts.hostname, parts.port  # .port raises on a port out of 0-65535
    except ValueError as exc:
        raise PacsError(f"--dicomweb {url!r}: not a valid URL ({exc}); {expected}") from None
    if parts.scheme not in ("http", "https") or not host:
        raise PacsError(f"--dicomweb {url!r}: {expected}")
    if parts.username or parts.password:
        raise PacsError(
            "--dicomweb: the URL must not hold a user or password; set CHESTXR_PACS_USER and "
            "CHESTXR_PACS_PASSWORD (or CHESTXR_PACS_TOKEN, or --credentials FILE) instead"
        )
    return str(url).strip().rstrip("/")


@dataclass(frozen=True)
class FoundStudy:
    """One QIDO-RS match: its Study Instance UID and Patient ID (for the keyed study name)."""

    uid: str
    patient_id: str = ""

    def key(self, keyer: Any) -> str:
        """The study's keyed name (``study-<12 hex>``), as :class:`chestxr.pacs.Keyer` names its folder."""
        from pydicom.dataset import Dataset

        ds = Dataset()
        ds.PatientID, ds.StudyInstanceUID = self.patient_id, self.uid
        return str(keyer.study(ds))


@dataclass
class Retrieved:
    """What :meth:`DicomWeb.retrieve_studies` wrote: ``n_instances``, and the studies it skipped as
    (study key, reason)."""

    n_instances: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


class DicomWeb:
    """One DICOMweb server. ``timeout``: seconds for connecting, for each read, and for each whole request."""

    def __init__(self, url: str, credentials: Optional[Credentials] = None, *, timeout: float = 30.0) -> None:
        require("dicomweb_client")
        from dicomweb_client.api import DICOMwebClient

        self.url = _public_url(url)
        self.timeout = check_timeout(timeout)
        logging.getLogger("dicomweb_client").setLevel(logging.CRITICAL)
        self._deadline = RequestDeadline()
        self._session = guarded_session(self.url, self._deadline)
        (credentials or Credentials()).apply(self._session)
        self._client = DICOMwebClient(self.url, session=self._session, timeout=(self.timeout, self.timeout))
        self._client.set_http_retry_params(retry=True, max_attempts=3, wait_exponential_multiplier=250)

    def _call(self, operation: str, expected: str, fn: Callable[..., _T], *args: Any, study: str = "", **kw: Any) -> _T:
        """``fn(*args, **kw)`` (one request) under the deadline, its failures turned into one-line PacsErrors."""
        with self._errors(operation, expected, study=study):
            with self._deadline.limit(self.timeout):
                result = fn(*args, **kw)
        return result

    def _search(self, filters: dict[str, Any], **kw: Any) -> list[FoundStudy]:
        return _studies(self._client.search_for_studies(search_filters=filters, **kw))

    def _retrieve(self, uid: str) -> list[tuple[Any, bytes]]:
        from chestxr.pacs._staging import dataset_bytes

        return _instances(self._client.retrieve_study(uid), uid, dataset_bytes)

    @contextmanager
    def _errors(self, operation: str, expected: str, *, study: str = "") -> Iterator[None]:
        import requests

        where = f"DICOMweb server {self.url}"

        def for_study(reason: str, advice: str) -> StudyRetrieveError:
            return StudyRetrieveError(f"{where}: study {study}: {reason}; {advice}", key=study, reason=reason)

        try:
            yield
        except PacsError:
            raise
        except Exception as exc:
            if self._deadline.expired or isinstance(exc, requests.exceptions.Timeout):
                raise self._late(operation) from None
            if isinstance(exc, requests.exceptions.HTTPError):
                code = getattr(exc.response, "status_code", None)
                if code in (401, 403):
                    raise PacsError(
                        f"{where}: refused the credentials (HTTP {code}) during {operation}; set "
                        "CHESTXR_PACS_USER/CHESTXR_PACS_PASSWORD or CHESTXR_PACS_TOKEN (or --credentials "
                        "FILE) to an account allowed to do this"
                    ) from None
                if study:
                    raise for_study(f"HTTP {code} during {operation}", "see the server's log") from None
                raise PacsError(
                    f"{where}: HTTP {code} during {operation}; check the URL's path (e.g. /dicom-web) and the "
                    "server's log"
                ) from None
            if isinstance(exc, requests.exceptions.TooManyRedirects):
                raise PacsError(f"{where}: too many redirects during {operation}; check the URL") from None
            if isinstance(exc, requests.exceptions.ConnectionError):
                raise PacsError(
                    f"{where}: cannot connect during {operation}; check the URL, the port and that "
                    "the PACS is running and reachable from here"
                ) from None
            if isinstance(exc, requests.exceptions.RequestException) and not isinstance(exc, ValueError):
                raise PacsError(f"{where}: {type(exc).__name__} during {operation}") from None
            # anything else came from reading the answer: not what DICOMweb defines
            got = getattr(self._session, "last_content_type", None) or "no content type"
            what = str(exc) if isinstance(exc, _Malformed) else f"{got}, {type(exc).__name__}"
            reason = f"the answer to {operation} is not {expected} ({what})"
            if study:
                raise for_study(reason, "see the server's log") from None
            raise PacsError(
                f"{where}: {reason}; check that --dicomweb is the server's DICOMweb root (e.g. /dicom-web) "
                "and the server's log"
            ) from None
        if self._deadline.expired:  # a close-delimited body cut at the deadline may look complete
            raise self._late(operation)

    def _late(self, operation: str) -> PacsError:
        return PacsError(
            f"DICOMweb server {self.url}: no answer within {self.timeout:g} s during {operation} (the whole "
            "request must end within --timeout); check that the server is up and not overloaded, or raise "
            "--timeout"
        )

    def search_studies(
        self, *, studies: Sequence[str] = (), since: Optional[str] = None, modalities: Sequence[str] = ()
    ) -> list[FoundStudy]:
        """Studies matching all filters (QIDO-RS). ``studies``: wanted UIDs (each must be a UID, see
        :func:`check_uid`, and exist); ``since``: YYYY-MM-DD (StudyDate on or after); ``modalities``: any of
        (ModalitiesInStudy). A match whose UID is not one asked for (a server ignoring the filter) is
        dropped."""
        wanted = [check_uid(u) for u in studies]
        filters: dict[str, Any] = {}
        if since is not None:
            try:
                day = _dt.date.fromisoformat(str(since).strip())
            except ValueError:
                raise PacsError(f"--since {since!r}: expected a date YYYY-MM-DD") from None
            filters["StudyDate"] = f"{day:%Y%m%d}-"
        codes = [_modality(m) for m in modalities]
        queries = [{**filters, "ModalitiesInStudy": m} for m in codes] or [filters]
        found: dict[str, FoundStudy] = {}
        operation, expected = "the study search (QIDO-RS)", "a DICOM JSON list of studies"
        if wanted:
            for n, uid in enumerate(wanted, start=1):
                hits = [
                    h
                    for q in queries
                    for h in self._call(operation, expected, self._search, {**q, "StudyInstanceUID": uid})
                    if h.uid == uid
                ]
                if not hits and not (since or codes):
                    raise PacsError(
                        f"DICOMweb server {self.url}: study #{n} of --study is not there; check the Study Instance UID"
                    )
                found.update((h.uid, h) for h in hits)
        else:
            for q in queries:
                found.update((h.uid, h) for h in self._all_pages(q, operation, expected))
        return list(found.values())

    def _all_pages(self, filters: dict[str, Any], operation: str, expected: str, page: int = 500) -> list[FoundStudy]:
        """Every QIDO match, ``page`` at a time; stops at a short page or one with nothing new (some servers,
        Orthanc among them, ignore ``offset``: dicomweb_client's get_remaining would then loop forever)."""
        out: list[FoundStudy] = []
        seen: set[str] = set()
        while True:
            hits = self._call(operation, expected, self._search, filters, limit=page, offset=len(out))
            new = [h for h in hits if h.uid not in seen]
            out += new
            seen.update(h.uid for h in new)
            if len(hits) < page or not new:
                return out

    def retrieve_studies(
        self, studies: Sequence[FoundStudy | str], staging: Path, keyer: Any = None, *, on_error: str = "raise"
    ) -> Retrieved:
        """Retrieve every instance of ``studies`` (WADO-RS) into ``staging`` (atomic file writes, the
        chestxr/pacs/_staging.py layout). A study is written only when its whole answer is valid: at least
        one instance, every part a DICOM dataset of that study with SOP Class and Instance UIDs.

        on_error: "raise" (a study that fails is a :class:`StudyRetrieveError` naming it by its keyed hash) or
        "skip" (it is left out, listed in the result's ``failed`` and in one warning). Server-wide failures
        (unreachable, credentials, deadline, redirect) always raise."""
        from chestxr.core import write_bytes_atomic
        from chestxr.pacs._staging import Keyer

        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
        keyer = keyer or Keyer()
        found = [s if isinstance(s, FoundStudy) else FoundStudy(check_uid(s, "study")) for s in studies]
        result = Retrieved()
        for k, study in enumerate(found, start=1):
            key = study.key(keyer)
            operation = f"the retrieval (WADO-RS) of study {k} of {len(found)}"
            try:
                datasets = self._call(operation, "multipart DICOM instances", self._retrieve, study.uid, study=key)
            except StudyRetrieveError as exc:
                if on_error == "raise":
                    raise StudyRetrieveError(
                        f"{exc}; nothing was predicted. Rerun with --on-bad-image skip to predict the other "
                        "studies (this one is then listed in skipped.csv)",
                        key=exc.key,
                        reason=exc.reason,
                    ) from None
                result.failed.append((key, f"not retrieved: {exc.reason}"))
                continue
            for ds, data in datasets:
                write_bytes_atomic(keyer.path(staging, ds), data)
            result.n_instances += len(datasets)
        if result.failed:
            warnings.warn(
                f"DICOMweb server {self.url}: {len(result.failed)} of {len(found)} studies not retrieved "
                "(listed in skipped.csv with the reason)",
                stacklevel=2,
            )
        return result

    def store(self, datasets: Sequence[Any]) -> int:
        """Store ``datasets`` (STOW-RS, grouped by study). Returns how many the server accepted; raises
        PacsError when it refused any."""
        by_study: dict[str, list[Any]] = {}
        for ds in datasets:
            by_study.setdefault(str(ds.StudyInstanceUID), []).append(ds)
        stored = 0
        for k, (uid, group) in enumerate(by_study.items(), start=1):
            answer = self._call(
                f"the store (STOW-RS) of study {k} of {len(by_study)}",
                "a DICOM JSON store response",
                self._client.store_instances,
                group,
                study_instance_uid=uid,
            )
            failed = list(getattr(answer, "FailedSOPSequence", []) or [])
            if failed:
                reasons = sorted({f"0x{int(getattr(f, 'FailureReason', 0)):04X}" for f in failed})
                raise PacsError(
                    f"DICOMweb server {self.url}: refused {len(failed)} of {len(group)} instance(s) "
                    f"of study {k} (failure reason {', '.join(reasons)}); see the server's log"
                )
            stored += len(group)
        return stored


def _modality(value: str) -> str:
    """One --modality code (CS: letters, digits, underscore, at most 16); PacsError otherwise (a wildcard or an
    empty value would widen the search)."""
    code = str(value).strip().upper()
    if not re.fullmatch(r"[A-Z0-9_]{1,16}", code):
        raise PacsError(
            f"--modality {value!r}: expected comma-separated modality codes such as CR,DX (letters, digits, _)"
        )
    return code


def _studies(answer: Any) -> list[FoundStudy]:
    """A QIDO-RS answer checked: a list of DICOM JSON objects, each with one valid Study Instance UID."""
    if not isinstance(answer, list):
        raise _Malformed(f"a JSON {type(answer).__name__}, not a list")
    out = []
    for item in answer:
        if not isinstance(item, dict):
            raise _Malformed(f"an item is a JSON {type(item).__name__}, not an object")
        uid = _value(item, STUDY_UID_TAG)
        if not isinstance(uid, str) or len(uid) > 64 or not _UID.fullmatch(uid):
            raise _Malformed("an item has no valid Study Instance UID")
        pid = _value(item, PATIENT_ID_TAG)
        out.append(FoundStudy(uid, pid.strip() if isinstance(pid, str) else ""))
    return out


def _value(item: dict, tag: str) -> Any:
    element = item.get(tag)
    values = element.get("Value") if isinstance(element, dict) else None
    return values[0] if isinstance(values, list) and values else None


def _instances(datasets: Any, uid: str, encode: Callable[[Any], bytes]) -> list[tuple[Any, bytes]]:
    """A WADO-RS study answer checked: at least one dataset, each of study ``uid`` with SOP Class and Instance
    UIDs; returns (dataset, its Part 10 bytes by ``encode``) pairs."""
    from pydicom.dataset import Dataset

    datasets = list(datasets)
    if not datasets:
        raise _Malformed("no instance at all")
    out = []
    for ds in datasets:
        if not isinstance(ds, Dataset):
            raise _Malformed(f"a part is a {type(ds).__name__}, not a DICOM dataset")
        if str(ds.get("StudyInstanceUID", "")).strip() != uid:
            raise _Malformed("an instance of another study")
        if not str(ds.get("SOPInstanceUID", "")).strip() or not str(ds.get("SOPClassUID", "")).strip():
            raise _Malformed("an instance without SOP Class/Instance UID")
        out.append((ds, encode(ds)))
    return out
