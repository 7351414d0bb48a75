"""``chestxr listen`` against real DICOM traffic: pynetdicom as the modality, Orthanc as the PACS.

A subprocess listener receives studies by C-STORE, predicts each once it is quiet, pushes its SR to
Orthanc; non-image SOP classes are acknowledged and listed, unreadable pixels are listed, a garbage connection does not
hurt it, SIGTERM stops it cleanly; kill -9 mid-study then restart processes every study exactly once;
a full disk on one study leaves the others untouched.
"""

from __future__ import annotations

import copy
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
from privacy_helpers import NEEDLES, mark_dicoms  # noqa: E402

from chestxr.pacs import Keyer  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


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
            printed = proc.stdout.read().decode() if proc.stdout is not None else ""
            raise AssertionError(f"listener exited {proc.returncode}: {printed}")
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
        # a non-image SOP class (an SR) is acknowledged and ignored, the association goes on
        sr_like = non_image(studies[uids[0]][0], "1.2.840.10008.5.1.4.1.1.88.33", "SR")
        # unreadable pixel data: a truncated PixelData in a study of its own
        broken = pydicom.dcmread(studies[uids[1]][0])
        broken.SOPInstanceUID = pydicom.uid.generate_uid()
        broken.StudyInstanceUID = pydicom.uid.generate_uid()
        broken.PixelData = broken.PixelData[:100]
        # a garbage connection first
        with socket.create_connection(("127.0.0.1", port), timeout=5) if _wait_port(port) else None as s:
            s.sendall(b"\x07\x00garbage-not-an-association" * 10)
        statuses = send(port, [f for u in uids for f in studies[u]] + [sr_like, broken])
        assert statuses == [0] * len(statuses)
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
    assert "acknowledged and ignored instance" in log and "stopped" in log
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
        wait_for(lambda: json.loads((d / "result.json").read_text()).get("stored"), 60, proc)
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
    import chestxr.pacs._journal as journal_mod
    import chestxr.pacs._listener as listener_mod
    from chestxr.pacs import Listener

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
        wait_for(lambda: results(out) == sorted([keys["b"], keys["c"]]), 60, log=out / "listen.log")
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
    import chestxr.pacs._listener as listener_mod
    from chestxr.pacs import Listener, Node

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


# ---------------------------------------------------------------------- issue 24: what a real archive sends


def in_process(pacs_run, out: Path, port: int, **kw):
    """A Listener in this process (logging to out/listen.log only), started."""
    import chestxr.pacs._listener as listener_mod
    from chestxr.pacs import Listener

    listener_mod.setup_logging(out, quiet=True)
    network_timeout = kw.pop("network_timeout", None)
    kw = {"study_timeout": 0.3, "retry_s": 0.5, **kw}
    lst = Listener(pacs_run, out, host="127.0.0.1", port=port, **kw)
    lst.network_timeout = network_timeout or lst.network_timeout
    return lst.start()


def copy_as(source, **changes) -> pydicom.Dataset:
    """A copy of ``source`` (path or dataset) with a new SOP Instance UID and ``changes`` applied."""
    ds = pydicom.dcmread(source) if not isinstance(source, pydicom.Dataset) else copy.deepcopy(source)
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    for k, v in changes.items():
        setattr(ds, k, v)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    return ds


def non_image(source, sop_class: str, modality: str) -> pydicom.Dataset:
    """A header-only instance of ``sop_class`` (an SR, a presentation state...) in ``source``'s study."""
    ds = copy_as(source, SOPClassUID=sop_class, Modality=modality)
    for kw in ("PixelData", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "SamplesPerPixel"):
        if kw in ds:
            delattr(ds, kw)
    return ds


NON_IMAGES = {
    "1.2.840.10008.5.1.4.1.1.88.33": ("SR", "Comprehensive SR"),
    "1.2.840.10008.5.1.4.1.1.11.1": ("PR", "Grayscale Softcopy Presentation State"),
    "1.2.840.10008.5.1.4.1.1.88.67": ("SR", "X-Ray Radiation Dose SR"),
}


def test_a_study_being_written_is_not_complete_so_it_is_never_split(studies, pacs_run, tmp_path, monkeypatch):
    """The first instance of a new study takes 1.5 s to be journaled (a loaded disk) with a 0.3 s quiet time:
    the worker must not take the study while that write is in progress. (Before: it saw the study folder
    with nothing in it yet, called it quiet, claimed the first instance alone as round 1 and the rest as
    round 2: two results, two SRs for one study.)"""
    import chestxr.pacs._journal as journal_mod

    real = journal_mod.write_bytes_atomic
    slow = {"left": 1}

    def write(path, data, **kw):
        if Path(path).suffix == ".dcm" and slow["left"]:
            slow["left"] -= 1
            Path(path).parent.mkdir(parents=True, exist_ok=True)  # the folder is there, the file not yet
            time.sleep(1.5)
        return real(path, data, **kw)

    monkeypatch.setattr(journal_mod, "write_bytes_atomic", write)
    uid = max(studies, key=lambda u: len(studies[u]))
    files = studies[uid] + [copy_as(studies[uid][0]), copy_as(studies[uid][0])]
    port, out = free_port(), tmp_path / "slow"
    lst = in_process(pacs_run, out, port)
    try:
        assert send(port, files) == [0] * len(files)
        key = skey(out, files[0])
        wait_for(lambda: results(out) != [], 60, log=out / "listen.log")
        time.sleep(1.0)  # a split would show as a second round within a quiet time
    finally:
        lst.stop()
    assert results(out) == [key]
    assert len(pd.read_csv(out / "studies" / key / "predictions.csv")) == len(files)


def test_non_image_instances_are_acknowledged_ignored_and_listed(studies, pacs_run, tmp_path):
    """An archive forwarding a whole study sends its SRs, presentation states and dose reports too: each is
    answered 0x0000 (so the sender carries on with the images), not kept, and listed (listen.log and the
    study's skipped.csv). A later SR alone for a processed study (chestxr's own SR routed back) starts no
    new round. (Before: 0x0122, and Orthanc aborted the transfer.)"""
    uid = sorted(studies)[0]
    images = list(studies[uid])
    extra = [non_image(images[0], sop, mod) for sop, (mod, _) in NON_IMAGES.items()]
    port, out = free_port(), tmp_path / "nonimage"
    lst = in_process(pacs_run, out, port)
    try:
        assert send(port, [extra[0], *images, *extra[1:]]) == [0] * (len(images) + len(extra))
        key = skey(out, images[0])
        wait_for(lambda: results(out) == [key], 60, log=out / "listen.log")
        assert send(port, [non_image(images[0], *list(NON_IMAGES)[:1], "SR")]) == [0]
        time.sleep(1.5)
    finally:
        lst.stop()
    assert results(out) == [key]
    d = out / "studies" / key
    assert json.loads((d / "result.json").read_text())["n_images"] == len(images)
    skipped = pd.read_csv(d / "skipped.csv")
    assert len(skipped) == len(extra)
    for modality, name in NON_IMAGES.values():
        assert skipped["reason"].str.contains(f"{name} Storage, modality {modality}").sum() == 1, list(
            skipped["reason"]
        )
    assert all(r.startswith(f"{key}/") for r in skipped["path"])
    log = (out / "listen.log").read_text()
    assert log.count("ignored") >= len(extra) + 1 and "SOP class not supported" not in log
    assert not list((out / "journal").rglob("*.dcm")) and not list((out / "studies").rglob("*.dcm"))


def send_explicit(port: int, datasets, *, aet: str = "CHESTXR") -> list[int]:
    """C-STORE in Explicit VR Little Endian only, so a dataset's raw bytes (even malformed ones) go as read."""
    from pynetdicom import AE

    ae = AE(ae_title="MODALITY")
    for sop in sorted({str(d.SOPClassUID) for d in datasets}):
        ae.add_requested_context(sop, ["1.2.840.10008.1.2.1"])
    assert _wait_port(port)
    assoc = ae.associate("127.0.0.1", port, ae_title=aet)
    assert assoc.is_established
    out = []
    for ds in datasets:
        st = assoc.send_c_store(ds)
        out.append(int(st.Status) if st else -1)
    assoc.release()
    return out


def bad_vr_length(source: Path, tmp: Path) -> pydicom.Dataset:
    """A copy of ``source`` (new SOP Instance UID, Explicit VR LE) whose Rows (US) is 3 bytes long: pydicom
    parses the file but cannot convert that element, so reading its header or pixels raises."""
    import struct

    tmp.mkdir(parents=True, exist_ok=True)
    good = copy_as(source)
    good.save_as(tmp / "good.dcm", enforce_file_format=True)
    raw = (tmp / "good.dcm").read_bytes()
    at = raw.index(b"\x28\x00\x10\x00US\x02\x00")
    raw = raw[:at] + b"\x28\x00\x10\x00US" + struct.pack("<H", 3) + raw[at + 8 : at + 10] + b"\x00" + raw[at + 10 :]
    (tmp / "bad.dcm").write_bytes(raw)
    return pydicom.dcmread(tmp / "bad.dcm")


def test_an_instance_that_cannot_be_reread_is_quarantined_and_its_study_goes_on(studies, pacs_run, tmp_path):
    """A CR whose Rows element has a bad length (3 bytes for US) is acknowledged (it is durably kept), then
    found unreadable: it is moved to OUT/quarantine/<study key>/<instance key>.dcm with the reason beside
    it, listed in the study's skipped.csv, and the rest of its study is predicted; the corrected instance,
    resent, is accepted and predicted as round 2. (Before: the study failed with BytesLengthException
    every 5 s, forever.)"""
    uid = max(studies, key=lambda u: len(studies[u]))
    images = list(studies[uid])
    bad = bad_vr_length(images[0], tmp_path / "bad")
    port, out = free_port(), tmp_path / "quarantine"
    lst = in_process(pacs_run, out, port)
    try:
        assert send_explicit(
            port, [pydicom.dcmread(f) for f in images[:1]] + [bad] + [pydicom.dcmread(f) for f in images[1:]]
        ) == [0] * (len(images) + 1)
        key = skey(out, images[0])
        wait_for(lambda: results(out) == [key], 60, log=out / "listen.log")
        fixed = pydicom.dcmread(tmp_path / "bad" / "good.dcm")  # the sender corrects it, same SOP Instance UID
        assert send_explicit(port, [fixed]) == [0]
        wait_for(lambda: results(out) == [key, f"{key}-r2"], 60, log=out / "listen.log")
    finally:
        lst.stop()
    assert json.loads((out / "studies" / f"{key}-r2" / "result.json").read_text())["n_images"] == 1
    inst = Keyer.persistent(out / "journal").instance(str(bad.SOPInstanceUID))
    q = out / "quarantine" / key / f"{inst}.dcm"
    assert q.read_bytes()[128:132] == b"DICM" and pydicom.dcmread(q).SOPInstanceUID == bad.SOPInstanceUID
    reason = (out / "quarantine" / key / f"{inst}.txt").read_text()
    assert "(0028,0010)" in reason and "US" in reason
    d = out / "studies" / key
    assert json.loads((d / "result.json").read_text())["n_images"] == len(images)
    skipped = pd.read_csv(d / "skipped.csv")
    assert skipped["path"].tolist() == [f"{key}/{inst}.dcm"] and "quarantine" in skipped["reason"][0]
    assert f"{key}: quarantined instance {inst[:8]}" in (out / "listen.log").read_text()
    assert own_file_leaks(out) == []


def text_sr(source) -> pydicom.Dataset:
    """A small Comprehensive SR (one TEXT finding) in ``source``'s study, as a reading room files it."""
    from pydicom.dataset import Dataset

    ds = non_image(source, "1.2.840.10008.5.1.4.1.1.88.33", "SR")
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "121071", "DCM", "Finding"
    text = Dataset()
    text.RelationshipType, text.ValueType, text.TextValue = "CONTAINS", "TEXT", "No acute disease."
    text.ConceptNameCodeSequence = [code]
    title = Dataset()
    title.CodeValue, title.CodingSchemeDesignator, title.CodeMeaning = "18748-4", "LN", "Diagnostic imaging report"
    ds.ValueType, ds.ContinuityOfContent = "CONTAINER", "SEPARATE"
    ds.ConceptNameCodeSequence, ds.ContentSequence = [title], [text]
    ds.CompletionFlag, ds.VerificationFlag = "COMPLETE", "UNVERIFIED"
    return ds


def test_orthanc_forwards_a_study_holding_an_sr_and_the_images_arrive(orthanc, studies, pacs_run, tmp_path):
    """Orthanc routes a whole study (its SR and its CRs) to the listener: every C-STORE succeeds, so
    Orthanc's job succeeds; the CRs are predicted and the SR is listed in skipped.csv. (Before: the SR got
    0x0122, Orthanc failed the job, the images never arrived.)"""
    orthanc.clear()
    uid = sorted(studies)[1]
    sr = text_sr(studies[uid][0])
    sr.save_as(tmp_path / "sr.dcm", enforce_file_format=True)
    for f in [tmp_path / "sr.dcm", *studies[uid]]:
        orthanc.upload(f)
    out = tmp_path / "forwarded"
    lst = in_process(pacs_run, out, orthanc.listener_port)
    try:
        assert _wait_port(orthanc.listener_port)
        orthanc_id = orthanc.rest("POST", "/tools/lookup", uid.encode())[0]["ID"]
        job = orthanc.rest("POST", "/modalities/chestxr/store", {"Resources": [orthanc_id], "Synchronous": True})
        key = skey(out, studies[uid][0])
        wait_for(lambda: results(out) == [key], 60, log=out / "listen.log")
    finally:
        lst.stop()
    assert job.get("Failures", []) == [] and job.get("InstancesCount") == len(studies[uid]) + 1, job
    d = out / "studies" / key
    assert json.loads((d / "result.json").read_text())["n_images"] == len(studies[uid])
    skipped = pd.read_csv(d / "skipped.csv")
    assert len(skipped) == 1 and "Comprehensive SR" in skipped["reason"][0]


def sender(port: int):
    """An open association to the listener (StoragePresentationContexts), for tests that abort it."""
    from pynetdicom import AE, StoragePresentationContexts

    ae = AE(ae_title="MODALITY")
    ae.requested_contexts = StoragePresentationContexts
    assert _wait_port(port)
    assoc = ae.associate("127.0.0.1", port, ae_title="CHESTXR")
    assert assoc.is_established
    return assoc


def test_an_aborted_transfer_waits_for_the_resend_and_gives_one_result(studies, pacs_run, tmp_path):
    """An association sends 2 of study A's 4 instances and 1 of study B's, then aborts. A's sender resends
    the whole study 1.5 s later (5 quiet times): A is predicted once, with its 4 images. B is never resent:
    it is processed as it is once the aborted timeout (8 s) has passed, with a warning. (Before: the partial A was
    predicted as soon as it was quiet, the resend gave a second result and SR.)"""
    a, b = sorted(studies)[:2]
    files_a = [pydicom.dcmread(studies[a][0])] + [copy_as(studies[a][0]) for _ in range(3)]
    port, out = free_port(), tmp_path / "aborted"
    # the resend must begin within the aborted timeout; 8 s leaves 6.5 s for a new association on a loaded machine
    lst = in_process(pacs_run, out, port, aborted_timeout=8.0)
    try:
        assoc = sender(port)
        for ds in [*files_a[:2], pydicom.dcmread(studies[b][0])]:
            assert int(assoc.send_c_store(ds).Status) == 0
        assoc.abort()
        time.sleep(1.5)
        assert results(out) == []
        assert send(port, files_a) == [0] * 4
        key_a, key_b = skey(out, files_a[0]), skey(out, studies[b][0])
        wait_for(lambda: key_a in results(out), 60, log=out / "listen.log")
        wait_for(lambda: key_b in results(out), 60, log=out / "listen.log")
        time.sleep(1.0)
    finally:
        lst.stop()
    assert results(out) == sorted([key_a, key_b])
    assert json.loads((out / "studies" / key_a / "result.json").read_text())["n_images"] == 4
    log = (out / "listen.log").read_text()
    assert f"{key_b}: its transfer was cut and not resent within 8 s; processing what arrived" in log
    assert f"{key_a}: its transfer was cut and not resent" not in log
    assert not list((out / "journal").glob("*/aborted-*")) and not list((out / "journal").glob("*/open-*"))


def test_an_idle_sender_closed_by_the_listener_is_not_a_cut_transfer(studies, pacs_run, tmp_path):
    """A modality keeps its association open after sending a study; the listener aborts it after its
    network timeout (2 s here, 60 s by default). The sender had been silent that long, so the study is
    complete at once, not held for the aborted timeout."""
    uid = sorted(studies)[0]
    port, out = free_port(), tmp_path / "idle"
    lst = in_process(pacs_run, out, port, aborted_timeout=600.0, network_timeout=2.0)
    try:
        assoc = sender(port)
        for f in studies[uid]:
            assert int(assoc.send_c_store(pydicom.dcmread(f)).Status) == 0
        key = skey(out, studies[uid][0])
        wait_for(lambda: results(out) == [key], 60, log=out / "listen.log")
        assert not assoc.is_established
    finally:
        lst.stop()
    assert "transfer was cut" not in (out / "listen.log").read_text()


def test_below_the_reserve_instances_are_refused_and_accepted_again_when_space_returns(studies, pacs_run, tmp_path):
    """The free-space probe is injected: while an instance would leave less than the reserve free, it is
    answered 0xA700 (out of resources: the sender keeps it and retries) and nothing is journaled; a study
    already received is still processed (the reserve is for its results); when space returns, the resend
    is accepted and processed, with no restart. One log line when refusing starts, one when it ends."""
    a, b = sorted(studies)[:2]
    reserve = 100 * 2**20
    free = {"bytes": 10 * 2**30}
    port, out = free_port(), tmp_path / "reserve"
    lst = in_process(pacs_run, out, port, reserve_bytes=reserve, free_space=lambda _path: free["bytes"])
    try:
        assert send(port, studies[a]) == [0] * len(studies[a])
        free["bytes"] = reserve + 1000  # an instance (about 9 kB) would eat into the reserve
        assert send(port, studies[b]) == [0xA700] * len(studies[b])
        key_a, key_b = skey(out, studies[a][0]), skey(out, studies[b][0])
        wait_for(lambda: results(out) == [key_a], 60, log=out / "listen.log")
        assert not (out / "journal" / key_b / "incoming").exists()
        assert send(port, studies[b]) == [0xA700] * len(studies[b])
        free["bytes"] = 10 * 2**30
        assert send(port, studies[b]) == [0] * len(studies[b])
        wait_for(lambda: results(out) == sorted([key_a, key_b]), 60, log=out / "listen.log")
    finally:
        lst.stop()
    log = (out / "listen.log").read_text()
    assert log.count("free space is below the reserve") == 1 and log.count("space is back") == 1
    assert "reserve 100 MiB" in log


def test_a_full_disk_under_the_journals_own_bookkeeping_does_not_stop_the_worker(
    studies, pacs_run, tmp_path, monkeypatch
):
    """state.json cannot be written (ENOSPC) for the study's claim, twice, and then for marking it done:
    the worker keeps going and the study is processed once when space returns. (Before: the claim's
    OSError ended the worker thread; nothing was processed again until a restart.)"""
    import chestxr.pacs._journal as journal_mod

    real = journal_mod.write_json_atomic
    fail = {"left": 3}

    def write(path, obj):
        if Path(path).name == "state.json" and fail["left"] and (fail["left"] > 1 or obj.get("done")):
            fail["left"] -= 1
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, obj)

    monkeypatch.setattr(journal_mod, "write_json_atomic", write)
    uid = sorted(studies)[0]
    port, out = free_port(), tmp_path / "statefull"
    lst = in_process(pacs_run, out, port, retry_s=0.2)
    try:
        assert send(port, studies[uid]) == [0] * len(studies[uid])
        key = skey(out, studies[uid][0])
        wait_for(
            lambda: results(out) == [key] and not list((out / "journal").rglob("*.dcm")), 20, log=out / "listen.log"
        )
    finally:
        lst.stop()
    assert fail["left"] == 0 and lst.processed == [key]
    log = (out / "listen.log").read_text()
    assert log.count(f"{key}: cannot claim the study (disk full)") == 2
    assert f"{key}: round 1 failed (disk full)" in log


def test_compressed_images_from_an_archive_are_accepted_and_read(studies, pacs_run, tmp_path):
    """Archives store CRs compressed (JPEG 2000, JPEG-LS, RLE: the ones pydicom can encode here; JPEG
    lossless and baseline are accepted the same way) and a sender proposing only that transfer syntax must
    be accepted: the images are journaled as received and predicted; a compressed non-image (a Secondary
    Capture in JPEG 2000) is acknowledged and ignored. (Before: no presentation
    context was accepted, the association failed.)"""
    from pydicom.uid import JPEG2000, JPEG2000Lossless, JPEGLSLossless, RLELossless

    uid = sorted(studies)[0]
    base = pydicom.dcmread(studies[uid][0])
    sent = []
    for ts in (RLELossless, JPEG2000Lossless, JPEGLSLossless):
        ds = copy_as(base)
        ds.compress(ts, generate_instance_uid=False)
        sent.append((ds, ts))
    sc = copy_as(base, SOPClassUID="1.2.840.10008.5.1.4.1.1.7", Modality="OT")
    sc.BitsAllocated = sc.BitsStored = 8
    sc.HighBit, sc.PixelRepresentation = 7, 0
    sc.PixelData = (base.pixel_array // 256).astype("uint8").tobytes() if base.BitsAllocated == 16 else base.PixelData
    sc.compress(JPEG2000, generate_instance_uid=False, j2k_psnr=[60])
    sent.append((sc, JPEG2000))
    port, out = free_port(), tmp_path / "compressed"
    lst = in_process(pacs_run, out, port)
    try:
        from pynetdicom import AE

        ae = AE(ae_title="ARCHIVE")
        for ds, ts in sent:
            ae.add_requested_context(ds.SOPClassUID, [ts])
        assert _wait_port(port)
        assoc = ae.associate("127.0.0.1", port, ae_title="CHESTXR")
        assert assoc.is_established
        statuses = [int(assoc.send_c_store(ds).Status) for ds, _ in sent]
        assoc.release()
        key = skey(out, base)
        wait_for(lambda: results(out) == [key], 60, log=out / "listen.log")
    finally:
        lst.stop()
    assert statuses == [0, 0, 0, 0]
    d = out / "studies" / key
    assert json.loads((d / "result.json").read_text())["n_images"] == 3
    skipped = pd.read_csv(d / "skipped.csv")
    assert len(skipped) == 1 and "Secondary Capture" in skipped["reason"][0]
