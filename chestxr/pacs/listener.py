"""``chestxr listen``: a C-STORE SCP that predicts each study once it has been quiet for a while.

* Accepts CR and DX image storage (and C-ECHO). Other storage SOP classes are negotiated, then answered
  0x0122 "SOP class not supported" (a modality pushing a whole study with its SR or presentation states
  keeps going); an instance that cannot be journaled (disk full) is answered 0xA700 "out of resources",
  so the sender keeps it and retries: only what is durably journaled is acknowledged (:mod:`journal`).
* A worker thread takes each study quiet for ``study_timeout`` seconds (and whose sending association,
  if any, has been released or aborted), predicts it with the folder
  predict workflow (:mod:`chestxr.pacs.process`) into ``<out>/studies/<study key>/`` (``-r2``... for
  instances that arrived after a study was processed), and C-STOREs its SR / heat maps to ``store_to``.
  A failure on one study (unreadable pixels: listed in its skipped.csv; disk full; the PACS down for the
  push) is logged and retried later; it never stops the others.
* ``stop()`` (the CLI calls it on SIGTERM/SIGINT) stops accepting, lets the study in progress finish and
  returns; received studies not yet processed stay journaled and are resumed by the next start.

Logs (``<out>/listen.log`` and stderr) name studies by key only, never by an identifier or UID.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Optional

from chestxr.core.fileio import write_bytes_atomic, write_json_atomic
from chestxr.pacs import require
from chestxr.pacs.dimse import Node, c_store
from chestxr.pacs.journal import Journal
from chestxr.pacs.staging import IMAGE_SOP_CLASSES, dataset_bytes

LOG = logging.getLogger("chestxr.listen")
SUCCESS, SOP_CLASS_NOT_SUPPORTED, OUT_OF_RESOURCES, CANNOT_UNDERSTAND = 0x0000, 0x0122, 0xA700, 0xC000


class Listener:
    """The SCP, its journal under ``out/journal`` and its results under ``out/studies``."""

    def __init__(
        self,
        run_dir: str | Path,
        out: str | Path,
        *,
        ae_title: str = "CHESTXR",
        host: str = "0.0.0.0",
        port: int = 11112,
        study_timeout: float = 30.0,
        store_to: Optional[Node] = None,
        store_sr: bool = False,
        store_heatmaps: bool = False,
        keep_received: bool = False,
        study_reduce: str = "max",
        batch_size: int = 32,
        retry_s: Optional[float] = None,
    ) -> None:
        from chestxr.runs.run import load_run

        require("pynetdicom")
        if store_sr or store_heatmaps:
            require("highdicom")
        self.out = Path(out)
        self.studies_dir = self.out / "studies"
        self.studies_dir.mkdir(parents=True, exist_ok=True)
        self.journal = Journal(self.out / "journal")
        self.run = load_run(run_dir)
        self.ae_title, self.host, self.port = ae_title, host, int(port)
        self.study_timeout = float(study_timeout)
        self.retry_s = float(retry_s if retry_s is not None else max(5.0, self.study_timeout))
        self.store_to, self.store_sr, self.store_heatmaps = store_to, store_sr, store_heatmaps
        if (store_sr or store_heatmaps) and store_to is None:
            from chestxr.core.errors import PacsError

            raise PacsError("--store-sr/--store-heatmaps need --store-to AET@HOST:PORT (where to C-STORE them)")
        self.keep_received, self.study_reduce, self.batch_size = keep_received, study_reduce, batch_size
        self._stop = threading.Event()
        self._started = 0.0
        self._not_before: dict[tuple[str, int], float] = {}
        # study key -> ids of open associations that sent it: a study is not complete while its sender
        # is still connected (pynetdicom's network timeout bounds an idle one)
        self._senders: dict[str, set[int]] = {}
        self._senders_lock = threading.Lock()
        self._server: Any = None
        self._worker: Optional[threading.Thread] = None
        self.processed: list[str] = []  # results folder names, in order (for tests and benchmarks)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> "Listener":
        """Start the SCP (non-blocking) and the worker; resumes what the journal holds."""
        from pynetdicom import AE, AllStoragePresentationContexts, evt
        from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]  # made at import time

        logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
        pending = [k for k in self.journal.studies() if self.journal.incoming(k) or self.journal.open_rounds(k)]
        if pending:
            LOG.info("resuming %d journaled stud%s", len(pending), "y" if len(pending) == 1 else "ies")
        ae = AE(ae_title=self.ae_title)
        ae.supported_contexts = AllStoragePresentationContexts
        ae.add_supported_context(Verification)
        ae.maximum_associations = 16
        handlers: list[Any] = [
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_ACCEPTED, self._on_assoc, ["accepted"]),
            (evt.EVT_ABORTED, self._on_assoc, ["aborted"]),
            (evt.EVT_RELEASED, self._on_assoc, ["released"]),
            (evt.EVT_CONN_CLOSE, self._on_assoc, ["closed"]),
            (evt.EVT_REJECTED, self._on_assoc, ["rejected"]),
        ]
        self._started = time.time()
        self._server = ae.start_server((self.host, self.port), block=False, evt_handlers=handlers)
        self._worker = threading.Thread(target=self._work, name="chestxr-listen-worker", daemon=True)
        self._worker.start()
        LOG.info(
            "listening as %s on %s:%d (study timeout %g s)", self.ae_title, self.host, self.port, self.study_timeout
        )
        return self

    def stop(self, timeout: Optional[float] = None) -> None:
        """Stop accepting, let the study in progress finish, return (the rest stays journaled)."""
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        if self._worker is not None:
            self._worker.join(timeout)
        LOG.info("stopped; journaled studies not yet processed resume at the next start")

    def request_stop(self) -> None:
        """Ask the listener to stop (safe from a signal handler); :meth:`wait` then returns."""
        self._stop.set()

    def wait(self) -> None:
        """Block until :meth:`stop` is called (from a signal handler or another thread)."""
        while not self._stop.wait(0.5):
            pass

    # ------------------------------------------------------------------ receiving (association threads)

    def _on_assoc(self, event: Any, what: str) -> None:
        if what != "closed":  # every connection closes; released/aborted/rejected say how
            requestor = getattr(event.assoc, "requestor", None)
            LOG.info("association %s (calling AE %s)", what, str(getattr(requestor, "ae_title", "?")).strip())
        if what in ("released", "aborted", "closed"):
            with self._senders_lock:
                for senders in self._senders.values():
                    senders.discard(id(event.assoc))

    def _on_store(self, event: Any) -> int:
        try:
            ds = event.dataset
            ds.file_meta = event.file_meta
            sop_class = str(ds.SOPClassUID)
            study, sop = str(ds.StudyInstanceUID), str(ds.SOPInstanceUID)
        except Exception:  # noqa: BLE001 - a dataset pynetdicom cannot decode
            LOG.warning("refused an instance whose data set cannot be decoded (0x%04X)", CANNOT_UNDERSTAND)
            return CANNOT_UNDERSTAND
        if sop_class not in IMAGE_SOP_CLASSES:
            LOG.info("refused an instance of a non CR/DX SOP class (0x%04X)", SOP_CLASS_NOT_SUPPORTED)
            return SOP_CLASS_NOT_SUPPORTED
        if not study or not sop:
            return CANNOT_UNDERSTAND
        try:
            key, new = self.journal.add(ds)
            with self._senders_lock:
                self._senders.setdefault(key, set()).add(id(event.assoc))
        except OSError as exc:
            what = "disk full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else f"{type(exc).__name__}"
            LOG.error(
                "cannot journal an instance (%s); refused with 0x%04X so the sender keeps it", what, OUT_OF_RESOURCES
            )
            return OUT_OF_RESOURCES
        LOG.info("%s: %s instance %s", key, "received" if new else "already had", self.journal.keyer.instance(sop)[:8])
        return SUCCESS

    # ------------------------------------------------------------------ processing (worker thread)

    def _work(self) -> None:
        while not self._stop.is_set():
            busy = False
            for key in self.journal.studies():
                if self._stop.is_set():
                    break
                for n in self.journal.open_rounds(key):
                    busy |= self._due(key, n) and self._process(key, n)
                with self._senders_lock:
                    sending = bool(self._senders.get(key))
                if not sending and self.journal.quiet_for(key, since=self._started) >= self.study_timeout:
                    claimed = self.journal.claim(key)
                    if claimed is not None:
                        busy |= self._process(key, claimed)
            if not busy:
                self._stop.wait(0.1)

    def _due(self, key: str, n: int) -> bool:
        return time.monotonic() >= self._not_before.get((key, n), 0.0)

    def _process(self, key: str, n: int) -> bool:
        """Predict round ``n`` of ``key`` unless its results exist, push, mark done. False on a failure
        (retried after ``retry_s``)."""
        name = key if n == 1 else f"{key}-r{n}"
        final = self.studies_dir / name
        outbox = self.journal.root / key / f"outbox-{n}"
        try:
            if not final.exists():
                LOG.info("%s: processing round %d", key, n)
                self._predict(key, n, final, outbox)
                self.processed.append(name)
                LOG.info("%s: results written to studies/%s", key, name)
            self._push(key, n, final, outbox)
            self.journal.mark_done(key, n, keep=self.keep_received)
            shutil.rmtree(outbox, ignore_errors=True)
            return True
        except Exception as exc:  # noqa: BLE001 - one study's failure must not stop the others
            from chestxr.core.errors import ChestXRError

            what = (
                "disk full"
                if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
                else (str(exc) if isinstance(exc, ChestXRError) else type(exc).__name__)
            )
            LOG.error("%s: round %d failed (%s); kept in the journal, retrying in %g s", key, n, what, self.retry_s)
            self._not_before[(key, n)] = time.monotonic() + self.retry_s
            if os.environ.get("CHESTXR_DEBUG"):
                LOG.exception("details")
            return False

    def _predict(self, key: str, n: int, final: Path, outbox: Path) -> None:
        from chestxr.pacs.process import predict_staging

        work = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=self.studies_dir))
        try:
            staging = work / "instances"
            (staging / key).mkdir(parents=True)
            for f in sorted(self.journal.round_dir(key, n).glob("*.dcm")):
                _link_or_copy(f, staging / key / f.name)
            result = work / "result"
            written, results = predict_staging(
                self.run,
                staging,
                result,
                study_reduce=self.study_reduce,
                batch_size=self.batch_size,
                num_workers=0,
                on_bad_image="skip",
                make_sr=self.store_sr,
                make_heatmaps=self.store_heatmaps,
            )
            res = results[0]
            shutil.rmtree(outbox, ignore_errors=True)
            for ds in res.datasets:  # carry identifiers: they stay in the journal, like received instances
                name = self.journal.keyer.instance(str(ds.SOPInstanceUID))
                write_bytes_atomic(outbox / f"{name}.dcm", dataset_bytes(ds))
            n_sr = sum(1 for d in res.datasets if d.Modality == "SR")
            write_json_atomic(
                result / "result.json",
                {
                    "study_id": key,
                    "round": n,
                    "n_images": res.n_images,
                    "n_skipped": res.n_skipped,
                    "sr": n_sr,
                    "heatmaps": len(res.datasets) - n_sr,
                    "store_to": str(self.store_to) if self.store_to else None,
                    "processed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                },
            )
            os.rename(result, final)  # the commit point: the round is processed
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _push(self, key: str, n: int, final: Path, outbox: Path) -> None:
        if self.store_to is None or self.journal.is_pushed(key, n):
            return
        import pydicom

        files = sorted(outbox.glob("*.dcm"))
        if files:
            sent = c_store([pydicom.dcmread(f) for f in files], self.store_to, calling_aet=self.ae_title)
            LOG.info("%s: stored %d object(s) to %s", key, sent, self.store_to)
        self.journal.mark_pushed(key, n)
        info = json.loads((final / "result.json").read_text())
        write_json_atomic(final / "result.json", {**info, "stored": True})


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def setup_logging(out: Path, *, quiet: bool = False) -> None:
    """listen.log in ``out`` (appended, one line per event) and stderr, for the chestxr.listen logger."""
    LOG.setLevel(logging.INFO)
    LOG.propagate = False
    for h in list(LOG.handlers):
        LOG.removeHandler(h)
        h.close()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S")
    out.mkdir(parents=True, exist_ok=True)
    fh = logging.FileHandler(out / "listen.log", encoding="utf-8")
    fh.setFormatter(fmt)
    LOG.addHandler(fh)
    if not quiet:
        sh = logging.StreamHandler()
        sh.setFormatter(fmt)
        LOG.addHandler(sh)
