"""``chestxr listen`` under load and under a real full disk (slow tests; CI runs them).

soak: 1,000 instances in 250 studies from 4 senders over many associations (one of them aborted and
resent), a ``kill -9`` of the listener midway and a restart; the senders resend what was not acknowledged
(whole batches, as a modality's queue does). Every instance ends in exactly one results folder, no study
is split, every study gets exactly one SR (by SOP Instance UID) at the SR sink, a pynetdicom Storage SCP.

enospc: the listener's output on a 6 MiB tmpfs mounted in a user + mount namespace (``unshare -rm``, no
root; skipped where the kernel does not allow it): a real ENOSPC while writing a study's results, a real
ENOSPC (no inodes left) while journaling an instance, and recovery by itself once space returns.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import pandas as pd
import pydicom
import pytest

pytest.importorskip("pynetdicom")
pytest.importorskip("highdicom")

from pacs_helpers import make_run, synthetic_studies  # noqa: E402
from test_pacs_listen import REPO, _wait_port, free_port, results, send, sender, wait_for  # noqa: E402

from chestxr.pacs import Keyer  # noqa: E402

SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.33"


@pytest.fixture(scope="module")
def stress_run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("stress_run") / "run")


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> pydicom.Dataset:
    """One tiny (64 px) synthetic CR every soak instance is a copy of."""
    by_study = synthetic_studies(tmp_path_factory.mktemp("stress_studies"), n_images=2, seed=3)
    return pydicom.dcmread(sorted(by_study.values())[0][0])


def launch(run: Path, out: Path, port: int, *extra: str) -> subprocess.Popen:
    """``chestxr listen`` in a subprocess, its stderr appended to ``out``.stderr (a pipe nobody reads
    would fill up and block the listener's logging)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "CHESTXR_NO_PROGRESS": "1"}
    cmd = [sys.executable, "-m", "chestxr", "listen", "--checkpoint", str(run), "--out", str(out)]
    cmd += ["--host", "127.0.0.1", "--port", str(port), *extra]
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f"{out.name}.stderr", "ab") as log:
        return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)


class SRSink:
    """A pynetdicom Storage SCP on 127.0.0.1 that records (StudyInstanceUID, SOPInstanceUID) of each SR."""

    def __init__(self) -> None:
        from pynetdicom import AE, evt

        self.received: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        ae = AE(ae_title="SRSINK")
        ae.add_supported_context(SR_CLASS)
        self.port = free_port()
        self.server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on)])

    def _on(self, event) -> int:
        ds = event.dataset
        with self._lock:
            self.received.append((str(ds.StudyInstanceUID), str(ds.SOPInstanceUID)))
        return 0

    def by_study(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = defaultdict(set)
        with self._lock:
            for study, sop in self.received:
                out[study].add(sop)
        return out

    def stop(self) -> None:
        self.server.shutdown()


def soak_studies(template: pydicom.Dataset, n_studies: int, per_study: int) -> list[list[pydicom.Dataset]]:
    from pydicom.uid import generate_uid

    out = []
    for s in range(n_studies):
        study_uid, series_uid, rows = generate_uid(), generate_uid(), []
        for i in range(per_study):
            ds = copy.deepcopy(template)
            ds.PatientID, ds.PatientName = f"SOAK{s:04d}", f"SOAK^{s:04d}"
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.InstanceNumber = i + 1
            rows.append(ds)
        out.append(rows)
    return out


class Sender(threading.Thread):
    """A modality's queue: sends its batches (several studies, one association each) and resends a whole
    batch when any instance of it was not acknowledged 0x0000 (connection lost, listener down)."""

    def __init__(self, port: int, batches: list[list[pydicom.Dataset]], *, abort_batch: int | None = None) -> None:
        super().__init__(daemon=True)
        self.port, self.batches, self.abort_batch = port, batches, abort_batch
        self.acked = 0
        self.resent: set[int] = set()  # batches sent again (after an abort, a refusal or the kill)
        self.failed_tries = 0  # associations that failed or were cut (the listener down counts each try)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for i, batch in enumerate(self.batches):
                if i == self.abort_batch:  # send half, then A-ABORT: the resend below completes it
                    self._try(batch[: len(batch) // 2], abort=True)
                    self.resent.add(i)
                while not self._try(batch):
                    self.resent.add(i)
                    self.failed_tries += 1
                    time.sleep(0.3)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def _try(self, batch: list[pydicom.Dataset], *, abort: bool = False) -> bool:
        from pynetdicom import AE, StoragePresentationContexts

        ae = AE(ae_title="MODALITY")
        ae.requested_contexts = StoragePresentationContexts
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        assoc = ae.associate("127.0.0.1", self.port, ae_title="CHESTXR")
        if not assoc.is_established:
            return False
        ok = True
        try:
            for ds in batch:
                status = assoc.send_c_store(ds)
                if not status or int(status.Status) != 0:
                    ok = False
                    break
                self.acked += 1
        except Exception:  # noqa: BLE001 - the listener died under us
            ok = False
        if abort or not ok:
            assoc.abort()
        else:
            assoc.release()
        return ok and not abort


@pytest.mark.slow
def test_soak_1000_instances_250_studies_one_kill9_every_instance_once_no_split_no_duplicate_sr(
    stress_run, template, tmp_path
):
    n_studies, per_study, n_senders, studies_per_batch = 250, 4, 4, 5
    studies = soak_studies(template, n_studies, per_study)
    sink = SRSink()
    port, out = free_port(), tmp_path / "soak"
    store = [
        "--study-timeout",
        "1",
        "--store-sr",
        "--store-to",
        f"SRSINK@127.0.0.1:{sink.port}",
        "--aborted-timeout",
        "300",
    ]
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    t0 = time.monotonic()
    proc = launch(stress_run, out, port, *store)
    try:
        assert _wait_port(port)
        senders = []
        for k in range(n_senders):
            mine = studies[k::n_senders]
            batches = [
                [ds for study in mine[b : b + studies_per_batch] for ds in study]
                for b in range(0, len(mine), studies_per_batch)
            ]
            senders.append(Sender(port, batches, abort_batch=2 if k == 0 else None))
        for s in senders:
            s.start()
        # kill -9 midway, with associations open and rounds in progress
        wait_for(lambda: sum(s.acked for s in senders) >= n_studies * per_study // 2, 300, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        acked_at_kill = sum(s.acked for s in senders)
        time.sleep(1.0)
        proc = launch(stress_run, out, port, *store)
        for s in senders:
            s.join(timeout=600)
            assert not s.is_alive() and s.error is None, s.error
        keyer = Keyer.persistent(out / "journal")
        keys = sorted({keyer.study(study[0]) for study in studies})
        assert len(keys) == n_studies

        def all_stored() -> bool:
            if len(results(out)) < n_studies:
                return False
            return all(json.loads((out / "studies" / k / "result.json").read_text()).get("stored") for k in keys)

        wait_for(all_stored, 600, proc, out / "listen.log")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        sink.stop()
    wall = time.monotonic() - t0
    load_after = Path("/proc/loadavg").read_text().split()[:3]
    # no split: one results folder per study, named for round 1, with all its instances
    assert results(out) == keys
    seen: list[str] = []
    for study in studies:
        table = pd.read_csv(out / "studies" / keyer.study(study[0]) / "predictions.csv")
        assert len(table) == per_study
        seen += [str(i).split("/")[-1].removesuffix(".dcm") for i in table["image_id"]]
    # every instance processed once
    expected = sorted(keyer.instance(str(ds.SOPInstanceUID)) for study in studies for ds in study)
    assert sorted(seen) == expected and len(set(seen)) == n_studies * per_study
    log = (out / "listen.log").read_text()
    for k in keys:
        assert log.count(f"{k}: results written to studies/{k}\n") == 1, k
    # one SR per study (a push repeated after the kill files the same SOP Instance UID again)
    srs = sink.by_study()
    assert sorted(srs) == sorted(str(study[0].StudyInstanceUID) for study in studies)
    assert all(len(uids) == 1 for uids in srs.values())
    # the kill really interrupted the stream, and the journal is empty
    resent = sum(len(s.resent) for s in senders)
    tries = sum(s.failed_tries for s in senders)
    assert n_studies * per_study // 2 <= acked_at_kill < n_studies * per_study and resent >= 2
    assert "resuming" in log or "transfer was cut" in log
    assert not list((out / "journal").rglob("*.dcm")) and not list((out / "journal").glob("*/open-*"))
    print(
        f"\nsoak: {n_studies * per_study} instances, {n_studies} studies, {n_senders} senders, "
        f"kill -9 after {acked_at_kill} acknowledged, {resent} batches resent ({tries} failed tries), "
        f"{len(sink.received) - n_studies} SR pushes repeated (same UID); wall {wall:.1f} s; "
        f"load average before {' '.join(load_before)}, after {' '.join(load_after)}"
    )


# ---------------------------------------------------------------------- a real full disk


def _namespace_mount_works(tmp: Path) -> str | None:
    """None when ``unshare -rm`` can mount a tmpfs here, else why not."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return "unshare (util-linux) not installed"
    probe = tmp / "probe"
    probe.mkdir()
    r = subprocess.run(
        [unshare, "-rm", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {probe} && touch {probe}/x"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return None if r.returncode == 0 else f"no unprivileged user+mount namespace here: {r.stderr.strip()[:200]}"


NAMESPACE_SCRIPT = r"""
set -e
mount -t tmpfs -o size=6m,nr_inodes=400 tmpfs "$DISK"
"$PYTHON" -m chestxr listen --checkpoint "$RUN" --out "$DISK/out" --host 127.0.0.1 --port "$PORT" \
    --study-timeout 1 --reserve-mb 0.5 > "$LOGDIR/listen.stdout" 2>&1 &
LISTENER=$!
echo ready
while read -r cmd; do
    case "$cmd" in
        fill-bytes) "$PYTHON" -c "import sys
f = open('$DISK/filler', 'ab')
try:
    while True: f.write(b'x' * 4096); f.flush()
except OSError: pass" ;;
        fill-inodes) "$PYTHON" -c "import os
os.makedirs('$DISK/inodes', exist_ok=True)
i = 0
try:
    while True: open(f'$DISK/inodes/{i}', 'w').close(); i += 1
except OSError: pass" ;;
        free) rm -rf "$DISK/filler" "$DISK/inodes" ;;
        ls) (cd "$DISK/out" && find studies quarantine -maxdepth 1 2>/dev/null | sort | tr '\n' ' '; echo) ;;
        stop) kill -TERM $LISTENER; wait $LISTENER; echo "exit $?"; exit 0 ;;
    esac
    echo done
done
"""


@pytest.mark.slow
def test_a_real_full_disk_refuses_then_recovers_by_itself(stress_run, template, tmp_path):
    """On a 6 MiB tmpfs: study A is processed; the disk is filled (by bytes) while study B waits for its
    quiet time, so writing B's results hits a real ENOSPC and is retried; an instance sent then is refused
    0xA700 (free space below the reserve); the inodes are exhausted, so journaling an instance hits a real
    ENOSPC and is refused 0xA700; space is freed, and B is processed and C accepted with no restart."""
    why = _namespace_mount_works(tmp_path)
    if why:
        pytest.skip(why)
    disk = tmp_path / "disk"
    disk.mkdir()
    port = free_port()
    env = {
        **os.environ,
        "DISK": str(disk),
        "RUN": str(stress_run),
        "PORT": str(port),
        "PYTHON": sys.executable,
        "LOGDIR": str(tmp_path),
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        "OMP_NUM_THREADS": "1",
        "CHESTXR_NO_PROGRESS": "1",
    }
    shell = subprocess.Popen(
        ["unshare", "-rm", "bash", "-c", NAMESPACE_SCRIPT],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )

    def do(cmd: str) -> str:
        assert shell.stdin is not None and shell.stdout is not None
        shell.stdin.write(cmd + "\n")
        shell.stdin.flush()
        lines = []
        while (line := shell.stdout.readline()) and line.strip() != "done" and not line.startswith("exit"):
            lines.append(line.strip())
        return line.strip() if line.startswith("exit") else " ".join(lines)

    def log() -> str:  # the listener's stderr, on the real disk (listen.log cannot grow on a full tmpfs)
        return (tmp_path / "listen.stdout").read_text()

    a, b, c = soak_studies(template, 3, 2)
    try:
        assert shell.stdout is not None and shell.stdout.readline().strip() == "ready"
        assert _wait_port(port)
        assert send(port, a) == [0, 0]
        wait_for(lambda: "results written" in log(), 60)
        # B's association stays open until the disk is full: a study is not complete while a sender of it is
        # connected, so its quiet time starts at the release, after the fill (the fill is a new Python process;
        # on a loaded machine it took longer than the 1 s quiet time, and B was processed before the disk filled)
        b_sender = sender(port)
        assert [int(b_sender.send_c_store(ds).Status) for ds in b] == [0, 0]
        do("fill-bytes")
        b_sender.release()
        wait_for(lambda: "(disk full); retrying" in log() or "failed (disk full)" in log(), 60)
        assert send(port, c) == [0xA700, 0xA700]  # below the reserve
        do("free")
        do("fill-inodes")  # bytes free, no inode: the journal's own write fails with ENOSPC
        assert send(port, c) == [0xA700, 0xA700]
        do("free")
        assert send(port, c) == [0, 0]
        wait_for(lambda: log().count("results written") == 3, 120)
        listed = do("ls").split()
        assert do("stop") == "exit 0"
    finally:
        if shell.poll() is None:
            shell.kill()
    assert len([p for p in listed if p.startswith("studies/study-")]) == 3
    text = log()
    assert "cannot claim the study (disk full)" in text or "round 1 failed (disk full)" in text
    assert "free space is below the reserve" in text and "cannot journal an instance (disk full)" in text
    assert text.count("space is back") == 1
