"""A real Orthanc PACS for the tests: temporary config, free localhost ports, storage in a temp folder.

``start_orthanc(folder)`` writes ``orthanc.json`` (DICOMweb plugin on, HTTP + DICOM on free 127.0.0.1
ports, RemoteAccessAllowed false, AuthenticationEnabled true with one test user, a ``chestxr``
DicomModalities entry for a listener on a reserved port), starts /usr/sbin/Orthanc, waits for /system and
returns an :class:`Orthanc` handle; ``stop()`` terminates it. ``orthanc_missing()`` says why it cannot run
(the tests then skip with that reason).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

ORTHANC = os.environ.get("CHESTXR_ORTHANC", "/usr/sbin/Orthanc")
PLUGIN_DIRS = ("/usr/share/orthanc/plugins", "/usr/lib/orthanc")
USER, PASSWORD = "chestxr-test", "not-a-real-secret-7Q"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dicomweb_plugin() -> Optional[Path]:
    """The DICOMweb plugin shared library of the orthanc-dicomweb package, if installed."""
    for d in PLUGIN_DIRS:
        for p in sorted(Path(d).glob("libOrthancDicomWeb.so*")) if Path(d).is_dir() else []:
            return p
    return None


def orthanc_missing() -> Optional[str]:
    """Why Orthanc cannot be started here (None when it can)."""
    if not (Path(ORTHANC).exists() or shutil.which("Orthanc")):
        return f"Orthanc not installed ({ORTHANC}); run scripts/install_orthanc.sh (apt-get install orthanc)"
    if dicomweb_plugin() is None:
        return "Orthanc's DICOMweb plugin not installed; apt-get install orthanc-dicomweb"
    return None


@dataclass
class Orthanc:
    """A running Orthanc: its ports, AE title, the test user, and a few REST helpers."""

    folder: Path
    http_port: int
    dicom_port: int
    listener_port: int
    process: subprocess.Popen
    aet: str = "ORTHANC"
    user: str = USER
    password: str = PASSWORD

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    @property
    def env(self) -> dict[str, str]:
        """Environment variables giving chestxr the test user's credentials."""
        return {"CHESTXR_PACS_USER": self.user, "CHESTXR_PACS_PASSWORD": self.password}

    def rest(self, method: str, path: str, data: Any = None, *, raw: bool = False) -> Any:
        import requests

        body = data if isinstance(data, (bytes, type(None))) else json.dumps(data)
        r = requests.request(method, self.url + path, data=body, auth=(self.user, self.password), timeout=30)
        r.raise_for_status()
        return r.content if raw else (r.json() if r.content else None)

    def upload(self, path: Path) -> dict:
        return self.rest("POST", "/instances", Path(path).read_bytes())

    def clear(self) -> None:
        """Delete every patient (tests share one server)."""
        for pid in self.rest("GET", "/patients"):
            self.rest("DELETE", f"/patients/{pid}")

    def instances(self, study_uid: str) -> list[dict]:
        """Tags (simplified) of every instance of a study (by its StudyInstanceUID)."""
        found = self.rest(
            "POST", "/tools/find", {"Level": "Instance", "Query": {"StudyInstanceUID": study_uid}, "Expand": True}
        )
        return [self.rest("GET", f"/instances/{i['ID']}/simplified-tags") | {"ID": i["ID"]} for i in found]

    def file(self, instance_id: str) -> bytes:
        return self.rest("GET", f"/instances/{instance_id}/file", raw=True)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_orthanc(folder: Path, *, wait_s: float = 30.0) -> Orthanc:
    """Write the config under ``folder``, start Orthanc and wait until /system answers."""
    import requests

    folder.mkdir(parents=True, exist_ok=True)
    http_port, dicom_port, listener_port = free_port(), free_port(), free_port()
    config = {
        "Name": "chestxr-test",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "storage"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": "ORTHANC",
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {USER: PASSWORD},
        "Plugins": [str(dicomweb_plugin())],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "Ssl": False},
        "DicomModalities": {"chestxr": ["CHESTXR", "127.0.0.1", listener_port]},
        "DicomAlwaysAllowStore": True,
        "DicomCheckCalledAETitle": False,
        "SaveJobs": False,
        "StableAge": 1,
        "HttpCompressionEnabled": False,
    }
    cfg = folder / "orthanc.json"
    cfg.write_text(json.dumps(config, indent=2))
    log = open(folder / "orthanc.log", "wb")
    proc = subprocess.Popen(
        [shutil.which("Orthanc") or ORTHANC, str(cfg)], stdout=log, stderr=subprocess.STDOUT, cwd=folder
    )
    server = Orthanc(folder, http_port, dicom_port, listener_port, proc)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"Orthanc exited with {proc.returncode}; see {folder / 'orthanc.log'}")
        try:
            if requests.get(server.url + "/system", auth=(USER, PASSWORD), timeout=2).ok:
                return server
        except requests.RequestException:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"Orthanc did not answer within {wait_s} s; see {folder / 'orthanc.log'}")
