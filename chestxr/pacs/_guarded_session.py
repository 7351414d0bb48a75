"""An HTTP session for one DICOMweb server that the server cannot hold forever or send elsewhere.

- Overall deadline: ``requests`` applies its timeout to the connect and to each socket read, so a server
  that sends one byte every few seconds keeps a request alive for ever. :class:`RequestDeadline` bounds the
  whole request: every socket the session opens is registered, and a timer shuts them down when the
  request runs past its deadline (the blocked read then returns; :attr:`RequestDeadline.expired` says why).
  Works for http and https alike (the raw socket under TLS is the one shut down).
- Redirects stay on the server: a redirect to another origin (scheme, host or port) is refused with a
  :class:`~chestxr.core.PacsError` before anything (credentials, the query) is sent there; a redirect
  within the same server (a moved path behind a reverse proxy) is followed, at most :data:`MAX_REDIRECTS`.
- The content type of the last answer is kept (``session.last_content_type``) for error messages.
"""

from __future__ import annotations

import re
import socket
import threading
import weakref
from contextlib import contextmanager
from typing import Any, Iterator, Optional
from urllib.parse import urljoin, urlsplit

from chestxr.core import PacsError

MAX_REDIRECTS = 5


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of ``url``; the default port filled in."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or (443 if scheme == "https" else 80)


class RequestDeadline:
    """Shuts down every socket of a session when the running request passes its deadline.

    ``with deadline.limit(seconds): ...`` around one request; afterwards ``expired`` is True when the timer
    fired (whatever error the interrupted read raised, or even if a close-delimited body looked complete)."""

    def __init__(self) -> None:
        self._sockets: "weakref.WeakSet[socket.socket]" = weakref.WeakSet()
        self._lock = threading.Lock()
        self.expired = False

    def register(self, sock: socket.socket) -> None:
        with self._lock:
            if self.expired:
                sock.close()
                raise socket.timeout("the request's deadline has passed")
            self._sockets.add(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:  # already closed by its owner
                pass

    @contextmanager
    def limit(self, seconds: float) -> Iterator[None]:
        self.expired = False
        timer = threading.Timer(seconds, self._expire)
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()


def guarded_session(base_url: str, deadline: RequestDeadline) -> Any:
    """A ``requests.Session`` whose sockets ``deadline`` controls and which refuses redirects leaving
    ``base_url``'s origin (see the module docstring)."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    class _Conn(HTTPConnection):
        def _new_conn(self) -> socket.socket:
            sock = super()._new_conn()
            deadline.register(sock)
            return sock

    class _SConn(HTTPSConnection):
        def _new_conn(self) -> socket.socket:
            sock = super()._new_conn()
            deadline.register(sock)
            return sock

    class _Pool(HTTPConnectionPool):
        ConnectionCls = _Conn

    class _SPool(HTTPSConnectionPool):
        ConnectionCls = _SConn

    class _Adapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = {"http": _Pool, "https": _SPool}

    home = origin(base_url)
    session = requests.Session()
    session.max_redirects = MAX_REDIRECTS
    session.last_content_type = None  # type: ignore[attr-defined]
    adapter = _Adapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)

    def check(response: Any, *args: Any, **kwargs: Any) -> Any:
        session.last_content_type = _content_type(response)  # type: ignore[attr-defined]
        if response.is_redirect:
            target = urljoin(response.url, response.headers.get("location", ""))
            try:
                elsewhere = origin(target) != home
            except ValueError:  # an unparsable Location (http://[::1): never followed
                elsewhere = True
            if elsewhere:
                response.close()
                raise PacsError(
                    f"DICOMweb server {base_url}: answered with a redirect (HTTP {response.status_code}) to another "
                    f"host ({_where(target)}); refused, nothing was sent there. Give that server's DICOMweb URL "
                    "as --dicomweb if it is the one to use"
                )
        return response

    session.hooks["response"].append(check)
    return session


def _content_type(response: Any) -> Optional[str]:
    value = (response.headers.get("content-type") or "").split(";")[0].strip().lower()
    return value[:64] or None


def _where(url: str) -> str:
    try:
        scheme, host, port = origin(url)
    except ValueError:
        return "an unparsable address"
    if not host:
        return "an unparsable address"
    host = re.sub(r"[^A-Za-z0-9.:_-]", "?", host)[:80]  # the server's text: printable, one line, short
    return f"{scheme}://{host}:{port}"
