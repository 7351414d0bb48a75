"""PACS credentials: HTTP basic (user + password) or a bearer token, read from the environment or a file.

Never from the command line (it ends up in shell history and ``ps``), never printed: ``repr``/``str``
show only the kind and where the secret came from. Sources, first match wins:

* ``CHESTXR_PACS_TOKEN``: a bearer token;
* ``CHESTXR_PACS_USER`` + ``CHESTXR_PACS_PASSWORD``: HTTP basic;
* ``--credentials FILE`` or ``CHESTXR_PACS_CREDENTIALS=FILE``: a file holding either ``token: T`` or
  ``user: U`` and ``password: P`` lines (``key = value`` and ``key: value`` both work; ``#`` comments).
  A file readable by group/others gets a warning (it should be ``chmod 600``).
"""

from __future__ import annotations

import os
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

from chestxr.core import PacsError

ENV_TOKEN, ENV_USER, ENV_PASSWORD, ENV_FILE = (
    "CHESTXR_PACS_TOKEN",
    "CHESTXR_PACS_USER",
    "CHESTXR_PACS_PASSWORD",
    "CHESTXR_PACS_CREDENTIALS",
)


@dataclass(frozen=True)
class Credentials:
    """``kind`` is "basic", "bearer" or "none"; ``source`` says where they came from (no secret in it)."""

    kind: str = "none"
    user: Optional[str] = None
    secret: Optional[str] = field(default=None, repr=False)
    source: str = "none"

    def __repr__(self) -> str:
        who = f", user={self.user!r}" if self.user else ""
        return f"Credentials(kind={self.kind!r}{who}, secret={'***' if self.secret else None}, source={self.source!r})"

    __str__ = __repr__

    def apply(self, session) -> None:  # noqa: ANN001 - a requests.Session
        """Put the credentials on a ``requests.Session`` (auth for basic, an Authorization header for bearer)."""
        if self.kind == "basic":
            session.auth = (self.user or "", self.secret or "")
        elif self.kind == "bearer":
            session.headers["Authorization"] = f"Bearer {self.secret}"

    def secrets(self) -> list[str]:
        """The secret strings, so callers can check that they never reach an output."""
        return [s for s in (self.secret,) if s]


def load_credentials(path: Optional[str | Path] = None, env: Optional[Mapping[str, str]] = None) -> Credentials:
    """Credentials from ``env`` (default ``os.environ``) or the file ``path`` (see the module docstring)."""
    env = os.environ if env is None else env
    if path is None and env.get(ENV_TOKEN):
        return Credentials("bearer", None, env[ENV_TOKEN], f"${ENV_TOKEN}")
    if path is None and env.get(ENV_USER):
        if not env.get(ENV_PASSWORD):
            raise PacsError(f"${ENV_USER} is set but ${ENV_PASSWORD} is not; set both (or ${ENV_TOKEN})")
        return Credentials("basic", env[ENV_USER], env[ENV_PASSWORD], f"${ENV_USER}/${ENV_PASSWORD}")
    path = path or env.get(ENV_FILE)
    if not path:
        return Credentials()
    return _from_file(Path(path))


def _from_file(path: Path) -> Credentials:
    try:
        text = path.read_text(encoding="utf-8")
        mode = path.stat().st_mode
    except OSError as exc:
        raise PacsError(f"{path}: cannot read the credentials file ({exc.strerror}); check the path") from None
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        warnings.warn(f"{path}: credentials file is readable by other users; chmod 600 it", stacklevel=3)
    values: dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        sep = min((i for i in (line.find(":"), line.find("=")) if i > 0), default=-1)
        if sep < 0:
            raise PacsError(f"{path}: line {lineno}: expected 'key: value' (token, user or password)")
        key, value = line[:sep].strip().lower(), line[sep + 1 :].strip()
        if key not in ("token", "user", "password"):
            raise PacsError(f"{path}: line {lineno}: unknown key {key!r}; use token, user or password")
        values[key] = value
    if values.get("token"):
        return Credentials("bearer", None, values["token"], f"file {path.name}")
    if values.get("user") and values.get("password"):
        return Credentials("basic", values["user"], values["password"], f"file {path.name}")
    raise PacsError(f"{path}: holds neither 'token: ...' nor both 'user: ...' and 'password: ...'")
