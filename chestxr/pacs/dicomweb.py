"""A DICOMweb client (QIDO-RS search, WADO-RS retrieve, STOW-RS store) with one-line errors.

Wraps ``dicomweb_client.DICOMwebClient`` on a ``requests.Session`` carrying the
:class:`~chestxr.pacs.credentials.Credentials`. Every failure becomes a :class:`~chestxr.core.errors.PacsError`
that names the server and the operation and says what to do: unreachable, refused credentials (401/403),
no answer within ``timeout`` seconds, other HTTP errors, or a store the server did not accept. Messages never
hold the credentials, the query (UIDs) or anything the server sent back; dicomweb_client's own log lines
(which can name UIDs) are silenced.
"""

from __future__ import annotations

import datetime as _dt
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence
from urllib.parse import urlsplit

from chestxr.core.errors import PacsError
from chestxr.pacs import require
from chestxr.pacs.credentials import Credentials

STUDY_UID_TAG = "0020000D"
SOP_UID_TAG = "00080018"


def _public_url(url: str) -> str:
    """``url`` checked: http(s), a host, no user:password in it (credentials come from env/files)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PacsError(f"--dicomweb {url!r}: expected http(s)://HOST[:PORT]/PATH (e.g. http://pacs:8042/dicom-web)")
    if parts.username or parts.password:
        raise PacsError(
            "--dicomweb: the URL must not hold a user or password; set CHESTXR_PACS_USER and "
            "CHESTXR_PACS_PASSWORD (or CHESTXR_PACS_TOKEN, or --credentials FILE) instead"
        )
    return url.rstrip("/")


class DicomWeb:
    """One DICOMweb server. ``timeout``: seconds for connecting and for each read."""

    def __init__(self, url: str, credentials: Optional[Credentials] = None, *, timeout: float = 30.0) -> None:
        require("dicomweb_client")
        import requests
        from dicomweb_client.api import DICOMwebClient

        self.url = _public_url(url)
        self.timeout = float(timeout)
        logging.getLogger("dicomweb_client").setLevel(logging.CRITICAL)
        session = requests.Session()
        (credentials or Credentials()).apply(session)
        self._client = DICOMwebClient(self.url, session=session, timeout=(self.timeout, self.timeout))
        self._client.set_http_retry_params(retry=True, max_attempts=3, wait_exponential_multiplier=250)

    @contextmanager
    def _errors(self, operation: str) -> Iterator[None]:
        import requests

        where = f"DICOMweb server {self.url}"
        try:
            yield
        except requests.exceptions.Timeout:
            raise PacsError(
                f"{where}: no answer within {self.timeout:g} s during {operation}; check that the "
                "server is up and not overloaded, or raise --timeout"
            ) from None
        except requests.exceptions.ConnectionError:
            raise PacsError(
                f"{where}: cannot connect during {operation}; check the URL, the port and that "
                "the PACS is running and reachable from here"
            ) from None
        except requests.exceptions.HTTPError as exc:
            code = getattr(exc.response, "status_code", None)
            if code in (401, 403):
                raise PacsError(
                    f"{where}: refused the credentials (HTTP {code}) during {operation}; set "
                    "CHESTXR_PACS_USER/CHESTXR_PACS_PASSWORD or CHESTXR_PACS_TOKEN (or --credentials "
                    "FILE) to an account allowed to do this"
                ) from None
            raise PacsError(
                f"{where}: HTTP {code} during {operation}; check the URL's path (e.g. /dicom-web) and the server's log"
            ) from None
        except requests.exceptions.RequestException as exc:
            raise PacsError(f"{where}: {type(exc).__name__} during {operation}") from None

    def search_studies(
        self, *, studies: Sequence[str] = (), since: Optional[str] = None, modalities: Sequence[str] = ()
    ) -> list[str]:
        """StudyInstanceUIDs matching all filters (QIDO-RS). ``studies``: wanted UIDs (each must exist);
        ``since``: YYYY-MM-DD (StudyDate on or after); ``modalities``: any of (ModalitiesInStudy)."""
        filters: dict[str, Any] = {}
        if since:
            try:
                day = _dt.date.fromisoformat(since)
            except ValueError:
                raise PacsError(f"--since {since!r}: expected a date YYYY-MM-DD") from None
            filters["StudyDate"] = f"{day:%Y%m%d}-"
        queries = [{**filters, "ModalitiesInStudy": m.strip().upper()} for m in modalities if m.strip()] or [filters]
        found: dict[str, None] = {}
        with self._errors("the study search (QIDO-RS)"):
            if studies:
                for n, uid in enumerate(studies, start=1):
                    hits = [
                        h
                        for q in queries
                        for h in self._client.search_for_studies(search_filters={**q, "StudyInstanceUID": uid})
                    ]
                    if not hits and not (since or modalities):
                        raise PacsError(
                            f"DICOMweb server {self.url}: study #{n} of --study is not there; "
                            "check the Study Instance UID"
                        )
                    found.update((_uid(h, STUDY_UID_TAG), None) for h in hits)
            else:
                for q in queries:
                    found.update((_uid(h, STUDY_UID_TAG), None) for h in self._all_pages(q))
        return [u for u in found if u]

    def _all_pages(self, filters: dict[str, Any], page: int = 500) -> list[dict]:
        """Every QIDO match, ``page`` at a time; stops at a short page or one with nothing new (some servers,
        Orthanc among them, ignore ``offset``: dicomweb_client's get_remaining would then loop forever)."""
        out: list[dict] = []
        seen: set[str] = set()
        while True:
            hits = self._client.search_for_studies(search_filters=filters, limit=page, offset=len(out))
            new = [h for h in hits if _uid(h, STUDY_UID_TAG) not in seen]
            out += new
            seen.update(_uid(h, STUDY_UID_TAG) for h in new)
            if len(hits) < page or not new:
                return out

    def retrieve_studies(self, study_uids: Sequence[str], staging: Path, keyer: Any = None) -> int:
        """Retrieve every instance of ``study_uids`` (WADO-RS) into ``staging`` (atomic file writes, the
        :mod:`chestxr.pacs.staging` layout). Returns the number of instances written."""
        from chestxr.pacs.staging import Keyer, write_instance

        keyer = keyer or Keyer()

        n = 0
        for k, uid in enumerate(study_uids, start=1):
            with self._errors(f"the retrieval (WADO-RS) of study {k} of {len(study_uids)}"):
                for ds in self._client.retrieve_study(uid):
                    write_instance(staging, ds, keyer)
                    n += 1
        return n

    def store(self, datasets: Sequence[Any]) -> int:
        """Store ``datasets`` (STOW-RS, grouped by study). Returns how many the server accepted; raises
        PacsError when it refused any."""
        by_study: dict[str, list[Any]] = {}
        for ds in datasets:
            by_study.setdefault(str(ds.StudyInstanceUID), []).append(ds)
        stored = 0
        for k, (uid, group) in enumerate(by_study.items(), start=1):
            with self._errors(f"the store (STOW-RS) of study {k} of {len(by_study)}"):
                answer = self._client.store_instances(group, study_instance_uid=uid)
            failed = list(getattr(answer, "FailedSOPSequence", []) or [])
            if failed:
                reasons = sorted({f"0x{int(getattr(f, 'FailureReason', 0)):04X}" for f in failed})
                raise PacsError(
                    f"DICOMweb server {self.url}: refused {len(failed)} of {len(group)} instance(s) "
                    f"of study {k} (failure reason {', '.join(reasons)}); see the server's log"
                )
            stored += len(group)
        return stored


def _uid(item: dict, tag: str) -> str:
    values = (item.get(tag) or {}).get("Value") or [""]
    return str(values[0])
