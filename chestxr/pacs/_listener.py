"""``chestxr listen``: a C-STORE SCP that predicts each study once it is complete.

* Accepts every storage SOP class (and C-ECHO). CR and DX images are journaled (chestxr/pacs/_journal.py) and only
  then acknowledged 0x0000; an instance of any other SOP class (an SR, a presentation state, a dose
  report...) is acknowledged 0x0000 too, not kept, and listed (listen.log, its round's skipped.csv), so
  an archive forwarding a whole study carries on to the images. An instance that cannot be journaled is
  answered 0xA700 "out of resources" (the sender keeps it and retries): a full disk, or free space below
  the reserve results need (``reserve_bytes``).
* A study is complete when no instance of it is being received or written, no association that sent it
  is open, and it has been quiet for ``study_timeout`` seconds (``aborted_timeout`` when an association
  that sent it was aborted or cut by a crash, and no later one finished a transfer of it: the sender is
  expected to resend). The worker thread then claims it as a round and :meth:`Listener.process_round`
  predicts it with the folder predict workflow (chestxr/pacs/_process.py) into
  ``<out>/studies/<study key>/`` (``-r2``... for instances that arrived after a study was processed),
  and C-STOREs its SR / heat maps to ``store_to``. An instance pydicom cannot read back is moved to
  ``<out>/quarantine/<study key>/`` and listed; the rest of its study goes on. A failure on one study
  (disk full, the PACS down for the push) is logged and retried later; it never stops the others.
* ``stop()`` (the CLI calls it on SIGTERM/SIGINT) stops accepting, lets the study in progress finish and
  returns; received studies not yet processed stay journaled and are resumed by the next start.

Logs (``<out>/listen.log`` and stderr) name studies and instances by key only, never by an identifier or UID.
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
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from chestxr.core import staged_output_dir, write_bytes_atomic, write_json_atomic
from chestxr.pacs._dimse import Node, c_store
from chestxr.pacs._extras import require
from chestxr.pacs._journal import DEFAULT_RESERVE_BYTES, Journal, NoRoom
from chestxr.pacs._staging import IMAGE_SOP_CLASSES, dataset_bytes

LOG = logging.getLogger("chestxr.listen")
SUCCESS, OUT_OF_RESOURCES, CANNOT_UNDERSTAND = 0x0000, 0xA700, 0xC000
#: the longest wait between two tries of a failed round (the first waits ``retry_s``, then it doubles)
MAX_RETRY_S = 60.0
#: seconds after its socket closed without a release or an abort that an association counts as cut
CLOSED_GRACE_S = 5.0


@dataclass
class _Activity:
    """What is going on with one study right now (in memory; guarded by ``Listener._lock``)."""

    writing: int = 0  # instances being journaled
    senders: set[int] = field(default_factory=set)  # open associations that sent it
    last: float = 0.0  # time.monotonic() when its last instance was journaled
    # the start (epoch) of the latest sender of it that was cut, and of the latest that ended with a release:
    # compared, not overwritten, because the two events arrive on different threads in any order
    cut: float = float("-inf")
    done: float = float("-inf")

    @property
    def aborted(self) -> bool:
        """A transfer of it was cut and no transfer that started later has finished."""
        return self.cut > self.done


@dataclass
class _Sender:
    """One open association: its token in the journal's open-/aborted- marks, the studies it sent, and
    time.monotonic() of its last activity (guarded by ``Listener._lock``)."""

    token: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    epoch: float = field(default_factory=time.monotonic)  # when the association started
    keys: set[str] = field(default_factory=set)
    marked: set[str] = field(default_factory=set)  # keys whose open-<token> mark is on disk
    closed: Optional[float] = None  # time.monotonic() when its socket closed
    last: float = field(default_factory=time.monotonic)


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
        aborted_timeout: float = 600.0,
        store_to: Optional[Node] = None,
        store_sr: bool = False,
        store_heatmaps: bool = False,
        keep_received: bool = False,
        study_reduce: str = "max",
        batch_size: int = 32,
        retry_s: Optional[float] = None,
        reserve_bytes: int = DEFAULT_RESERVE_BYTES,
        free_space: Optional[Callable[[Path], int]] = None,
        require_approval: bool = False,
    ) -> None:
        from chestxr.runs import load_run

        require("pynetdicom")
        if store_sr or store_heatmaps:
            require("highdicom")
        self.out = Path(out)
        self.studies_dir = self.out / "studies"
        self.quarantine_dir = self.out / "quarantine"
        self.studies_dir.mkdir(parents=True, exist_ok=True)
        self.journal = Journal(self.out / "journal", reserve_bytes=reserve_bytes, free_space=free_space)
        self.run = load_run(run_dir)
        self.ae_title, self.host, self.port = ae_title, host, int(port)
        self.study_timeout = float(study_timeout)
        self.aborted_timeout = max(float(aborted_timeout), self.study_timeout)
        self.retry_s = float(retry_s if retry_s is not None else max(5.0, self.study_timeout))
        self.store_to, self.store_sr, self.store_heatmaps = store_to, store_sr, store_heatmaps
        if (store_sr or store_heatmaps) and store_to is None:
            from chestxr.core import PacsError

            raise PacsError("--store-sr/--store-heatmaps need --store-to AET@HOST:PORT (where to C-STORE them)")
        self.keep_received, self.study_reduce, self.batch_size = keep_received, study_reduce, batch_size
        self.require_approval = require_approval  # issue 24.1 hook: each study is predicted only while approved
        self._stop = threading.Event()
        self._started = 0.0  # time.monotonic() at start: silence while the listener was down proves nothing
        self._lock = threading.Lock()
        self._activity: dict[str, _Activity] = {}
        self._pending: dict[str, float] = {}  # studies with unclaimed instances (oldest first) -> not before
        self._rounds: dict[tuple[str, int], float] = {}  # claimed rounds not done -> not before (monotonic)
        self._failures: dict[tuple[str, int], int] = {}
        self._assoc: dict[int, _Sender] = {}  # id(association) -> what it sent
        #: seconds of silence after which the listener aborts an association (pynetdicom's network timeout);
        #: such an abort is not a cut transfer: the sender had been idle that long
        self.network_timeout = 60.0
        self._refusing = False  # refusing instances for lack of space (logged once per episode)
        self._server: Any = None
        self._worker: Optional[threading.Thread] = None
        self.processed: list[str] = []  # results folder names, in order (for tests and benchmarks)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> "Listener":
        """Start the SCP (non-blocking) and the worker; resumes what the journal holds."""
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
        from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]  # made at import time

        logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
        self._started = time.monotonic()
        pending, aborted = self.journal.recover()
        rounds = [(k, n) for k in self.journal.studies() for n in self.journal.open_rounds(k)]
        with self._lock:
            self._pending = dict.fromkeys(pending, 0.0)
            self._rounds = dict.fromkeys(rounds, 0.0)
            for key in aborted:  # cut before this start: any transfer from now on is later
                self._activity.setdefault(key, _Activity()).cut = self._started
        resumed = len(set(pending) | {k for k, _ in rounds})
        if resumed:
            LOG.info("resuming %d journaled stud%s", resumed, "y" if resumed == 1 else "ies")
        if aborted:
            LOG.warning(
                "%d stud%s had a transfer cut (aborted, or open when the listener stopped): each waits "
                "%g s for its sender to resend before it is processed as it is",
                len(aborted),
                "y" if len(aborted) == 1 else "ies",
                self.aborted_timeout,
            )
        ae = AE(ae_title=self.ae_title)
        readable = image_transfer_syntaxes()
        for cx in AllStoragePresentationContexts:  # images: what chestxr can decode; the rest is not kept
            sop = str(cx.abstract_syntax)
            ae.add_supported_context(sop, readable if sop in IMAGE_SOP_CLASSES else ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        ae.maximum_associations = 16
        ae.network_timeout = self.network_timeout
        handlers: list[Any] = [
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_ACCEPTED, self._on_assoc, ["accepted"]),
            (evt.EVT_ABORTED, self._on_assoc, ["aborted"]),
            (evt.EVT_RELEASED, self._on_assoc, ["released"]),
            (evt.EVT_CONN_CLOSE, self._on_assoc, ["closed"]),
            (evt.EVT_REJECTED, self._on_assoc, ["rejected"]),
        ]
        self._server = ae.start_server((self.host, self.port), block=False, evt_handlers=handlers)
        self._worker = threading.Thread(target=self._work, name="chestxr-listen-worker", daemon=True)
        self._worker.start()
        LOG.info(
            "listening as %s on %s:%d (study timeout %g s, reserve %s MiB free)",
            self.ae_title,
            self.host,
            self.port,
            self.study_timeout,
            f"{self.journal.reserve_bytes / 2**20:g}",
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
        assoc = id(event.assoc)
        if what == "accepted":
            with self._lock:
                self._assoc[assoc] = _Sender()
        if what == "closed":
            # the socket closed; the association's own thread says how (released or aborted) and may do so
            # after this (pynetdicom signals the close from another thread); the worker ends a sender
            # closed for CLOSED_GRACE_S without either as cut
            with self._lock:
                if assoc in self._assoc:
                    self._assoc[assoc].closed = time.monotonic()
            return
        requestor = getattr(event.assoc, "requestor", None)
        LOG.info("association %s (calling AE %s)", what, str(getattr(requestor, "ae_title", "?")).strip())
        if what in ("released", "aborted"):
            self._end_association(assoc, released=what == "released")

    def _end_association(self, assoc: int, *, released: bool) -> None:
        """The association ``assoc`` is over: its studies lose a sender; a transfer that did not end with a
        release is cut (unless the listener closed it for being idle: its sender had been silent)."""
        with self._lock:
            sender = self._assoc.pop(assoc, None)
            if sender is None:
                return
            cut = not released and time.monotonic() - sender.last < self.network_timeout - 1.0
            held: dict[str, bool] = {}
            for key in sender.keys:
                act = self._activity.setdefault(key, _Activity())
                act.senders.discard(assoc)
                if cut:
                    act.cut = max(act.cut, sender.epoch)
                else:
                    act.done = max(act.done, sender.epoch)
                held[key] = act.aborted
        for key in sorted(held):
            try:  # the marks only matter for a restart; memory decides now
                self.journal.end_transfer(key, sender.token, aborted=cut and held[key], cleared=not held[key])
            except OSError as exc:
                LOG.error("%s: cannot record the end of a transfer (%s)", key, _why(exc))
            if cut and held[key]:
                LOG.warning(
                    "%s: its transfer was cut; it waits up to %g s for the sender to resend", key, self.aborted_timeout
                )

    def _on_store(self, event: Any) -> int:
        try:
            ds = event.dataset
            ds.file_meta = event.file_meta
            sop_class = str(ds.SOPClassUID)
            study, sop = str(ds.StudyInstanceUID), str(ds.SOPInstanceUID)
        except Exception:  # noqa: BLE001 - a dataset pynetdicom cannot decode
            LOG.warning("refused an instance whose data set cannot be decoded (0x%04X)", CANNOT_UNDERSTAND)
            return CANNOT_UNDERSTAND
        if not study or not sop:
            return CANNOT_UNDERSTAND
        ignored = None if sop_class in IMAGE_SOP_CLASSES else _not_an_image(ds, sop_class)
        key = self.journal.keyer.study(ds)
        assoc = id(event.assoc)
        with self._lock:  # from here until it is journaled, the study is not complete
            act = self._activity.setdefault(key, _Activity())
            act.writing += 1
            act.senders.add(assoc)
            sender = self._assoc.setdefault(assoc, _Sender())
            sender.keys.add(key)
            self._pending.setdefault(key, 0.0)
        try:
            if key not in sender.marked:  # so that a crash from here on counts as a cut transfer
                self.journal.begin_transfer(key, sender.token)
                sender.marked.add(key)
            key, new = self.journal.add(ds, ignored=ignored)
        except OSError as exc:
            return self._refuse(exc)
        finally:
            with self._lock:
                act.writing -= 1
                act.last = sender.last = time.monotonic()
        if self._refusing:
            self._refusing = False
            LOG.warning("space is back: accepting instances again")
        inst = self.journal.keyer.instance(sop)[:8]
        if ignored is not None:
            LOG.info("%s: acknowledged and ignored instance %s (%s)", key, inst, ignored)
        else:
            LOG.info("%s: %s instance %s", key, "received" if new else "already had", inst)
        return SUCCESS

    def _refuse(self, exc: OSError) -> int:
        if isinstance(exc, NoRoom):
            if not self._refusing:
                self._refusing = True
                LOG.error(
                    "free space is below the reserve (%s): refusing instances with 0x%04X until space returns",
                    exc.strerror,
                    OUT_OF_RESOURCES,
                )
        else:
            LOG.error(
                "cannot journal an instance (%s); refused with 0x%04X so the sender keeps it",
                _why(exc),
                OUT_OF_RESOURCES,
            )
        return OUT_OF_RESOURCES

    # ------------------------------------------------------------------ processing (worker thread)

    def _work(self) -> None:
        while not self._stop.is_set():
            busy = False
            with self._lock:
                now = time.monotonic()
                due = [r for r, not_before in self._rounds.items() if now >= not_before]
                gone = [a for a, s in self._assoc.items() if s.closed and now - s.closed > CLOSED_GRACE_S]
            for assoc in gone:
                self._end_association(assoc, released=False)
            for key, n in due:
                if self._stop.is_set():
                    break
                busy |= self.process_round(key, n)
            with self._lock:
                now = time.monotonic()
                candidates = [k for k, not_before in self._pending.items() if now >= not_before]
            for key in candidates:
                if self._stop.is_set():
                    break
                try:
                    claimed = self._claim_if_complete(key)
                except OSError as exc:  # e.g. no space for state.json: keep it pending, try again
                    with self._lock:
                        self._pending[key] = time.monotonic() + self.retry_s
                    LOG.error("%s: cannot claim the study (%s); retrying in %g s", key, _why(exc), self.retry_s)
                    continue
                if claimed is not None:
                    busy |= self.process_round(key, claimed)
            if not busy:
                self._stop.wait(0.1)

    def _claim_if_complete(self, key: str) -> Optional[int]:
        """Claim the study as its next round if it is complete: nothing of it being received or written, no
        association that sent it open, quiet for the study timeout (the aborted timeout after a cut
        transfer). The check and the claim hold the receivers' lock, so no instance slips in between."""
        with self._lock:
            act = self._activity.get(key) or _Activity()
            if act.writing or act.senders:
                return None
            quiet = time.monotonic() - max(act.last, self._started)
            if quiet < (self.aborted_timeout if act.aborted else self.study_timeout):
                return None
            entries = self.journal.incoming(key)
            n = self.journal.claim(key)
            del self._pending[key]
            self._activity.pop(key, None)  # nothing of it is pending any more: a new arrival starts afresh
            if n is not None:
                self._rounds[(key, n)] = 0.0
            if act.aborted:
                self.journal.clear_aborted(key)
                if n is not None:
                    LOG.warning(
                        "%s: its transfer was cut and not resent within %g s; processing what arrived",
                        key,
                        self.aborted_timeout,
                    )
            if n is None and entries:
                LOG.info("%s: only ignored instances arrived; no round to process", key)
            return n

    def process_round(self, key: str, n: int) -> bool:
        """Round ``n`` of study ``key``, once: predict it unless its results exist, push its SR / heat maps
        unless pushed, mark it done. False on a failure (kept; tried again after ``retry_s``, doubling up
        to a minute)."""
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
            with self._lock:
                self._rounds.pop((key, n), None)
                self._failures.pop((key, n), None)
            return True
        except Exception as exc:  # noqa: BLE001 - one study's failure must not stop the others
            from chestxr.core import ChestXRError

            what = str(exc) if isinstance(exc, ChestXRError) else _why(exc)
            with self._lock:
                tries = self._failures[(key, n)] = self._failures.get((key, n), 0) + 1
                wait = min(self.retry_s * 2 ** (tries - 1), max(MAX_RETRY_S, self.retry_s))
                self._rounds[(key, n)] = time.monotonic() + wait
            LOG.error("%s: round %d failed (%s); kept in the journal, retrying in %g s", key, n, what, wait)
            if os.environ.get("CHESTXR_DEBUG"):
                LOG.exception("details")
            return False

    def _predict(self, key: str, n: int, final: Path, outbox: Path) -> None:
        """Quarantine what cannot be re-read, predict the rest exactly as ``chestxr predict FOLDER`` (one
        study folder), keep the SR / heat maps in the journal's outbox, then publish the results folder whole
        (:func:`chestxr.core.staged_output_dir`: the commit point, from then on the round counts as processed)."""
        from chestxr.imaging import LoaderOptions
        from chestxr.pacs._instance_check import reread_problem
        from chestxr.pacs._process import predict_staging

        round_dir = self.journal.round_dir(key, n)
        for f in sorted(round_dir.glob("*.dcm")):
            problem = reread_problem(f)
            if problem is not None:
                self.journal.quarantine(key, n, f, problem, self.quarantine_dir)
                LOG.error("%s: quarantined instance %s (%s)", key, f.stem[:8], problem)
        work = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=self.studies_dir))
        try:
            staging = work / "instances"
            (staging / key).mkdir(parents=True)
            for f in sorted(round_dir.glob("*.dcm")):
                _link_or_copy(f, staging / key / f.name)
            left_out = [(f"{key}/{inst}.dcm", why) for inst, why in self.journal.ignored(key, n)]
            with staged_output_dir(final) as result:  # swapped in whole when complete: the commit point
                written, results = predict_staging(
                    self.run,
                    staging,
                    result,
                    study_reduce=self.study_reduce,
                    overwrite=True,
                    loading=LoaderOptions(batch_size=self.batch_size, num_workers=0, on_bad_image="skip"),
                    make_sr=self.store_sr,
                    make_heatmaps=self.store_heatmaps,
                    skipped_studies=left_out,  # (path, reason): they head skipped.csv
                    require_approval=self.require_approval,
                    inference_log=self.out / "inference_log.jsonl",  # chestxr monitor's log, appended per study
                )
                res = results[0]
                # here the round's outputs (``written``: predictions.csv, study_predictions.csv...) are complete
                # in ``result`` and nothing is committed yet: a per-study hook (e.g. an inference log) goes here
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
                        "n_skipped": res.n_skipped + len(left_out),
                        "sr": n_sr,
                        "heatmaps": len(res.datasets) - n_sr,
                        "store_to": str(self.store_to) if self.store_to else None,
                        "processed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    },
                )
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


def image_transfer_syntaxes() -> list[str]:
    """Transfer syntaxes accepted for CR/DX images: the uncompressed ones and every compressed one pydicom
    can decode here (JPEG baseline/lossless, JPEG-LS, JPEG 2000, HTJ2K, RLE with the core dependencies)."""
    from pydicom.pixels import get_decoder
    from pynetdicom import ALL_TRANSFER_SYNTAXES

    out = []
    for uid in ALL_TRANSFER_SYNTAXES:
        try:
            if get_decoder(uid).is_available:
                out.append(uid)
        except NotImplementedError:  # no decoder for it at all (MPEG, JPEG XL...)
            pass
    return out


def _not_an_image(ds: Any, sop_class: str) -> str:
    """The skipped.csv reason for an instance of a SOP class chestxr does not read (no identifier in it)."""
    import pydicom

    name = getattr(pydicom.uid.UID(sop_class), "name", "") or sop_class
    modality = str(ds.get("Modality", "") or "?")
    return f"not a CR/DX image (SOP class {name}, modality {modality}); acknowledged, not kept"


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "disk full"
    return type(exc).__name__


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
