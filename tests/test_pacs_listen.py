"""``chestxr listen`` against real DICOM traffic: pynetdicom as the modality, Orthanc as the PACS.

A subprocess listener receives studies by C-STORE, predicts each once it is quiet, pushes its SR to
Orthanc; non-image SOP classes are refused, unreadable pixels are listed, a garbage connection does not
hurt it, SIGTERM stops it cleanly; kill -9 mid-study then restart processes every study exactly once;
a full disk on one study leaves the others untouched.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from io import BytesIO
from pathlib import Path

import pandas as pd
import pydicom
import pytest

pytest.importorskip("pynetdicom")
pytest.importorskip("highdicom")

from pacs_helpers import FINDINGS, make_run, probs_close, read_sr, synthetic_studies  # noqa: E402
from test_privacy import NEEDLES, mark_dicoms  # noqa: E402

from chestxr.pacs.staging import Keyer  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def pacs_run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("listen_run") / "run")


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    folder = tmp_path_factory.mktemp("listen_studies")
    by_study = synthetic_studies(folder, n_images=10, seed=9)
    mark_dicoms(folder / "images")
    return by_study


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def send(port: int, files, *, aet: str = "CHESTXR") -> list[int]:
    """C-STORE ``files`` (paths or datasets) to 127.0.0.1:port as modality MODALITY; returns the statuses."""
    from pynetdicom import AE, StoragePresentationContexts

    ae = AE(ae_title="MODALITY")
    ae.requested_contexts = StoragePresentationContexts
    assert _wait_port(port), "listener not reachable within 60 s"
    assoc = ae.associate("127.0.0.1", port, ae_title=aet)
    assert assoc.is_established, "listener refused the association"
    statuses = []
    for f in files:
        ds = f if isinstance(f, pydicom.Dataset) else pydicom.dcmread(f)
        st = assoc.send_c_store(ds)
        statuses.append(int(st.Status) if st else -1)
    assoc.release()
    return statuses


def start_listen(run: Path, out: Path, port: int, *extra: str, timeout: float = 1.0) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "CHESTXR_NO_PROGRESS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "chestxr",
        "listen",
        "--checkpoint",
        str(run),
        "--out",
        str(out),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--study-timeout",
        str(timeout),
        *extra,
    ]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=REPO)


def wait_for(predicate, timeout: float = 60.0, proc=None, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"listener exited {proc.returncode}: {proc.stdout.read().decode()}")
        time.sleep(0.1)
    tail = "\n".join(log.read_text().splitlines()[-40:]) if log is not None and log.exists() else ""
    raise AssertionError(f"timed out; listen.log ends:\n{tail}")


def skey(out: Path, source) -> str:
    """The listener's key of the study of ``source`` (a file or dataset), from its journal's key."""
    ds = source if isinstance(source, pydicom.Dataset) else pydicom.dcmread(source, stop_before_pixels=True)
    return Keyer.persistent(out / "journal").study(ds)


def results(out: Path) -> list[str]:
    d = out / "studies"
    return sorted(p.name for p in d.iterdir() if not p.name.startswith(".")) if d.exists() else []


def own_file_leaks(root: Path) -> list[str]:
    """Markers in any name, and in any chestxr file's bytes (the journal's .dcm are received DICOMs)."""
    found = []
    for p in root.rglob("*"):
        if any(m.decode() in p.name for m in NEEDLES):
            found.append(f"name: {p}")
        if p.is_file() and p.suffix != ".dcm":
            data = p.read_bytes()
            found += [f"{m.decode()} in {p}" for m in NEEDLES if m in data]
    return found


@pytest.mark.slow
def test_listen_receives_predicts_pushes_sr_and_survives_bad_input(orthanc, studies, pacs_run, tmp_path):
    orthanc.clear()
    port, out = free_port(), tmp_path / "listen"
    proc = start_listen(
        pacs_run, out, port, "--store-sr", "--store-to", f"{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}"
    )
    try:
        uids = sorted(studies)
        # a non-image SOP class (an SR) is refused, the association goes on
        sr_like = pydicom.dcmread(studies[uids[0]][0])
        sr_like.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.33"
        # unreadable pixel data: a truncated PixelData in a study of its own
        broken = pydicom.dcmread(studies[uids[1]][0])
        broken.SOPInstanceUID = pydicom.uid.generate_uid()
        broken.StudyInstanceUID = pydicom.uid.generate_uid()
        broken.PixelData = broken.PixelData[:100]
        # a garbage connection first
        with socket.create_connection(("127.0.0.1", port), timeout=5) if _wait_port(port) else None as s:
            s.sendall(b"\x07\x00garbage-not-an-association" * 10)
        statuses = send(port, [f for u in uids for f in studies[u]] + [sr_like, broken])
        assert statuses[:-2] == [0] * (len(statuses) - 2)
        assert statuses[-2] == 0x0122 and statuses[-1] == 0
        keys = sorted([skey(out, studies[u][0]) for u in uids] + [skey(out, broken)])
        wait_for(lambda: results(out) == keys, 90, proc, out / "listen.log")
        wait_for(
            lambda: all(
                json.loads((out / "studies" / k / "result.json").read_text()).get("stored")
                for k in keys
                if k != skey(out, broken)
            ),
            30,
            proc,
        )
        bad = out / "studies" / skey(out, broken)
        skipped = pd.read_csv(bad / "skipped.csv")
        assert len(skipped) == 1 and "pixel data" in skipped["reason"][0]
        assert json.loads((bad / "result.json").read_text())["n_images"] == 0
        meta = json.loads((pacs_run / "model.json").read_text())
        for uid in uids:
            d = out / "studies" / skey(out, studies[uid][0])
            srow = pd.read_csv(d / "study_predictions.csv").iloc[0]
            assert int(srow["n_images"]) == len(studies[uid])
            srs = [i for i in orthanc.instances(uid) if i.get("Modality") == "SR"]
            assert len(srs) == 1
            sr = pydicom.dcmread(BytesIO(orthanc.file(srs[0]["ID"])))
            content = read_sr(sr)
            for f in FINDINGS:
                assert probs_close(content[f]["Probability of finding"], srow[f"prob_{f}"])
                assert f"weights_sha256={meta['weights_sha256']}" in content[f]["params"]
        # still healthy after all that: C-ECHO-like second association works
        assert send(port, [studies[uids[0]][0]]) == [0]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    log = (out / "listen.log").read_text()
    assert "refused an instance of a non CR/DX SOP class" in log and "stopped" in log
    assert own_file_leaks(out) == []
    printed = proc.stdout.read().decode()
    assert [m for m in NEEDLES if m.decode() in printed] == []


def _wait_port(port: int, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def test_orthanc_routes_a_study_to_the_listener(orthanc, studies, pacs_run, tmp_path):
    """The PACS itself as the sender: Orthanc's /modalities/chestxr/store pushes a study to the listener."""
    orthanc.clear()
    uid = sorted(studies)[0]
    for f in studies[uid]:
        orthanc.upload(f)
    out = tmp_path / "routed"
    store = ["--store-sr", "--store-heatmaps", "--store-to", f"{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}"]
    proc = start_listen(pacs_run, out, orthanc.listener_port, *store)
    try:
        assert _wait_port(orthanc.listener_port)
        orthanc_id = orthanc.rest("POST", "/tools/lookup", uid.encode())[0]["ID"]
        orthanc.rest("POST", "/modalities/chestxr/store", {"Resources": [orthanc_id], "Synchronous": True})
        wait_for(lambda: results(out) == [skey(out, studies[uid][0])], 60, proc)
        d = out / "studies" / skey(out, studies[uid][0])
        assert len(pd.read_csv(d / "predictions.csv")) == len(studies[uid])
        wait_for(lambda: json.loads((d / "result.json").read_text()).get("stored"), 30, proc)
        srs = [i for i in orthanc.instances(uid) if i.get("Modality") == "SR"]
        assert len(srs) == 1
        content = read_sr(pydicom.dcmread(BytesIO(orthanc.file(srs[0]["ID"]))))
        srow = pd.read_csv(d / "study_predictions.csv").iloc[0]
        assert all(probs_close(content[f]["Probability of finding"], srow[f"prob_{f}"]) for f in FINDINGS)
        images = pd.read_csv(d / "predictions.csv")
        positives = int(sum((images[f"call_{f}"] == "positive").sum() for f in FINDINGS))
        heatmaps = [i for i in orthanc.instances(uid) if i.get("Modality") == "OT"]
        assert len(heatmaps) == positives == json.loads((d / "result.json").read_text())["heatmaps"]
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0


@pytest.mark.slow
def test_sigterm_with_a_study_in_progress_keeps_it_for_the_restart(studies, pacs_run, tmp_path):
    uid = sorted(studies)[0]
    port, out = free_port(), tmp_path / "term"
    proc = start_listen(pacs_run, out, port, timeout=60)  # the study cannot go quiet before the signal
    assert send(port, studies[uid]) == [0] * len(studies[uid])
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert results(out) == [] and len(list((out / "journal").rglob("*.dcm"))) == len(studies[uid])
    proc = start_listen(pacs_run, out, port, timeout=0.5)
    try:
        wait_for(lambda: results(out) == [skey(out, studies[uid][0])], 60, proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    d = out / "studies" / skey(out, studies[uid][0])
    assert len(pd.read_csv(d / "predictions.csv")) == len(studies[uid])
    assert "resuming 1 journaled study" in (out / "listen.log").read_text()
    assert not list((out / "journal").rglob("*.dcm"))


@pytest.mark.slow
def test_kill9_mid_study_then_restart_processes_every_study_exactly_once(orthanc, studies, pacs_run, tmp_path):
    orthanc.clear()
    uids = sorted(studies)
    assert len(uids) >= 4
    port, out = free_port(), tmp_path / "crash"
    store = ["--store-sr", "--store-to", f"{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}"]
    proc = start_listen(pacs_run, out, port, *store, timeout=3)
    first, second = uids[:2], uids[2:]
    partial = studies[second[0]][:1]
    send(port, [f for u in first for f in studies[u]])
    # kill -9 as soon as the first study starts processing, with another study half received
    log = out / "listen.log"
    wait_for(lambda: log.exists() and "processing round" in log.read_text(), 60, proc)
    send(port, partial)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    # the quiet timer restarts with the listener: the half study waits for the rest
    proc = start_listen(pacs_run, out, port, *store, timeout=3)
    try:
        rest = [f for u in second for f in studies[u] if f not in partial]
        send(port, rest + partial)  # the modality resends what it is unsure of: no duplicate comes of it
        keys = sorted(skey(out, studies[u][0]) for u in uids)
        wait_for(lambda: results(out) == keys, 120, proc)
        wait_for(
            lambda: all(json.loads((out / "studies" / k / "result.json").read_text()).get("stored") for k in keys),
            60,
            proc,
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    for uid in uids:
        d = out / "studies" / skey(out, studies[uid][0])
        assert int(pd.read_csv(d / "study_predictions.csv").iloc[0]["n_images"]) == len(studies[uid])
        assert len([i for i in orthanc.instances(uid) if i.get("Modality") == "SR"]) == 1
    text = log.read_text()
    for k in keys:
        assert text.count(f"{k}: results written") <= 1 and text.count(f"{k}: processing round 2") == 0
    assert not list((out / "journal").rglob("*.dcm"))  # everything processed, nothing left pending


def test_disk_full_on_one_study_does_not_drop_the_others(studies, pacs_run, tmp_path, monkeypatch):
    """In process: journaling study A hits ENOSPC (refused 0xA700, the sender keeps it); writing study B's
    results hits ENOSPC once (kept, retried); study C is unaffected. Everything ends processed once."""
    from chestxr.pacs import journal as journal_mod
    from chestxr.pacs import listener as listener_mod
    from chestxr.pacs.listener import Listener

    uids = sorted(studies)
    a, b, c = uids[:3]
    full = {"journal": True, "results": True}
    keys: dict[str, str] = {}
    real_write = journal_mod.write_bytes_atomic

    def write(path, data):
        if full["journal"] and keys["a"] in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(path, data)

    real_predict = Listener._predict

    def predict(self, key, n, final, outbox):
        if full["results"] and key == keys["b"]:
            full["results"] = False
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_predict(self, key, n, final, outbox)

    monkeypatch.setattr(journal_mod, "write_bytes_atomic", write)
    monkeypatch.setattr(Listener, "_predict", predict)
    port, out = free_port(), tmp_path / "full"
    listener_mod.setup_logging(out, quiet=True)
    lst = Listener(pacs_run, out, host="127.0.0.1", port=port, study_timeout=0.3, retry_s=0.5)
    keys.update({n: lst.journal.keyer.study(pydicom.dcmread(studies[u][0])) for n, u in zip("abc", (a, b, c))})
    lst.start()
    try:
        st = send(port, [f for u in (a, b, c) for f in studies[u]])
        n_a = len(studies[a])
        assert st[:n_a] == [0xA700] * n_a and st[n_a:] == [0] * (len(st) - n_a)
        wait_for(lambda: results(out) == sorted([keys["b"], keys["c"]]), 60)
        full["journal"] = False  # space freed: the modality resends A
        assert send(port, studies[a]) == [0] * n_a
        wait_for(lambda: results(out) == sorted(keys.values()), 60)
    finally:
        lst.stop()
    assert sorted(lst.processed) == sorted(keys.values())
    text = (out / "listen.log").read_text()
    assert "disk full" in text and f"{keys['b']}: round 1 failed (disk full)" in text


def test_push_failure_is_retried_without_predicting_again(orthanc, studies, pacs_run, tmp_path):
    """--store-to unreachable: the results are written once, the SR waits in the journal; the next start
    (now with Orthanc reachable) pushes it without running the model again."""
    from chestxr.pacs import listener as listener_mod
    from chestxr.pacs.dimse import Node
    from chestxr.pacs.listener import Listener

    orthanc.clear()
    uid = sorted(studies)[0]
    port, out = free_port(), tmp_path / "push"
    listener_mod.setup_logging(out, quiet=True)
    dead = Node("NOBODY", "127.0.0.1", free_port())
    lst = Listener(pacs_run, out, host="127.0.0.1", port=port, study_timeout=0.3, store_to=dead, store_sr=True)
    lst.start()
    try:
        assert send(port, studies[uid]) == [0] * len(studies[uid])
        key = lst.journal.keyer.study(pydicom.dcmread(studies[uid][0]))
        log = out / "listen.log"
        wait_for(lambda: "cannot be reached" in log.read_text(), 60, log=log)
    finally:
        lst.stop()
    assert results(out) == [key] and lst.processed == [key]
    assert not json.loads((out / "studies" / key / "result.json").read_text()).get("stored")
    assert [i for i in orthanc.instances(uid) if i.get("Modality") == "SR"] == []
    alive = Node(orthanc.aet, "127.0.0.1", orthanc.dicom_port)
    lst = Listener(pacs_run, out, host="127.0.0.1", port=port, study_timeout=0.3, store_to=alive, store_sr=True)
    lst.start()
    try:
        wait_for(lambda: json.loads((out / "studies" / key / "result.json").read_text()).get("stored"), 60, log=log)
    finally:
        lst.stop()
    assert lst.processed == []  # pushed from the journal's outbox, not predicted again
    assert len([i for i in orthanc.instances(uid) if i.get("Modality") == "SR"]) == 1
    assert not list((out / "journal").rglob("*.dcm"))
