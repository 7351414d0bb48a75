"""Small hostile DICOMweb servers for the tests, on 127.0.0.1 (http.server in a thread).

:class:`FakeDicomWeb` answers QIDO-RS study searches and WADO-RS study retrievals from a dict of
{StudyInstanceUID: [DICOM files]} the way a conforming server does, unless ``misbehave(handler, kind, uid)``
takes the request over (returns True after writing its own answer): a 404 for one study, a body dripping one
byte every few seconds, a redirect, a list of strings instead of DICOM JSON, a multipart body with zero parts,
text/html. ``requests`` records (method, path, headers) of every request it got.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import parse_qs, urlsplit

import pydicom

BOUNDARY = "chestxr-test-boundary"


class FakeDicomWeb:
    """A DICOMweb server at ``self.url`` (``/dicom-web``); ``close()`` stops it."""

    def __init__(
        self,
        studies: Optional[dict[str, list[Path]]] = None,
        misbehave: Optional[Callable[["Handler", str, str], bool]] = None,
    ) -> None:
        self.studies = studies or {}
        self.misbehave = misbehave
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        owner = self

        class _Handler(Handler):
            fake = owner

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/dicom-web"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> "FakeDicomWeb":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def qido(self, uid_filter: Optional[str]) -> list[dict]:
        out = []
        for uid, files in self.studies.items():
            if uid_filter and uid_filter != uid:
                continue
            ds = pydicom.dcmread(files[0], stop_before_pixels=True)
            out.append(
                {
                    "0020000D": {"vr": "UI", "Value": [uid]},
                    "00100020": {"vr": "LO", "Value": [str(ds.get("PatientID", ""))]},
                }
            )
        return out


class Handler(BaseHTTPRequestHandler):
    fake: FakeDicomWeb
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802
        parts = urlsplit(self.path)
        self.fake.requests.append(("GET", parts.path, dict(self.headers)))
        segments = [s for s in parts.path.split("/") if s]
        if segments[-1:] == ["studies"]:
            kind, uid = "qido", (parse_qs(parts.query).get("StudyInstanceUID") or [""])[0]
        elif len(segments) >= 2 and segments[-2] == "studies":
            kind, uid = "wado", segments[-1]
        else:
            kind, uid = "other", ""
        if self.fake.misbehave and self.fake.misbehave(self, kind, uid):
            return
        if kind == "qido":
            self.send_body(json.dumps(self.fake.qido(uid or None)).encode(), "application/dicom+json")
        elif kind == "wado" and uid in self.fake.studies:
            self.send_multipart([Path(f).read_bytes() for f in self.fake.studies[uid]])
        else:
            self.send_body(b"not found", "text/plain", status=404)

    def do_POST(self) -> None:  # noqa: N802
        self.fake.requests.append(("POST", self.path, dict(self.headers)))
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.send_body(b"{}", "application/dicom+json")

    # answers
    def send_body(self, body: bytes, content_type: str, *, status: int = 200, headers: Optional[dict] = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def send_multipart(self, parts: list[bytes]) -> None:
        body = b"".join(
            f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p + b"\r\n" for p in parts
        )
        body += f"--{BOUNDARY}--\r\n".encode()
        self.send_body(body, f'multipart/related; type="application/dicom"; boundary={BOUNDARY}')

    def drip(self, body: bytes, *, every: float, content_type: str = "application/dicom+json") -> None:
        """Headers at once, then the body one byte every ``every`` seconds (a server too slow to be useful
        that still never leaves a read idle as long as a per-read timeout)."""
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.flush()
        try:
            for i in range(len(body)):
                self.wfile.write(body[i : i + 1])
                self.wfile.flush()
                time.sleep(every)
        except OSError:
            pass  # the client hung up: what a deadline does
