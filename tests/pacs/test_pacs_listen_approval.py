"""``listen --require-approval`` (issue 24.1): refuses to start with a void or missing approval (the port never
opens); while it runs, a study is predicted and its SR filed only while the approval holds (real Orthanc)."""

from __future__ import annotations

import json
import socket

import pytest

pytest.importorskip("pynetdicom")
pytest.importorskip("highdicom")

from pacs_helpers import make_run, synthetic_studies  # noqa: E402
from test_pacs_listen import free_port, results, send, start_listen, wait_for  # noqa: E402

from chestxr.cli import main  # noqa: E402


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("state", ["not approved", "void"])
def test_listen_refuses_to_start_without_a_valid_approval(state, tmp_path, capsys):
    from chestxr.runs import approval_status, approve_run

    run = make_run(tmp_path / "run")
    if state == "void":
        approve_run(run, reviewer="Dr A")
        meta = json.loads((run / "model.json").read_text())
        meta["findings"][0], meta["findings"][1] = meta["findings"][1], meta["findings"][0]
        (run / "model.json").write_text(json.dumps(meta))
        assert approval_status(run).state == "void"
    port, out = free_port(), tmp_path / "listen"
    code = main(
        ["listen", "--checkpoint", str(run), "--out", str(out), "--host", "127.0.0.1", "--port", str(port)]
        + ["--require-approval"]
    )
    err = capsys.readouterr().err
    assert code == 2 and "NOT APPROVED FOR CLINICAL USE" in err and "--require-approval" in err, err
    assert not out.exists() and not _port_open(port)


@pytest.mark.slow
def test_a_study_arriving_after_the_approval_turned_void_files_no_sr(orthanc, tmp_path):
    from chestxr.runs import REFERENCE_PROFILE_FILE, approve_run

    orthanc.clear()
    run = make_run(tmp_path / "run")
    approve_run(run, reviewer="Dr A")
    by_study = synthetic_studies(tmp_path / "studies", n_images=6, seed=3)
    first, second = sorted(by_study)[:2]
    port, out = free_port(), tmp_path / "listen"
    store = ["--store-sr", "--store-to", f"{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}"]
    proc = start_listen(run, out, port, *store, "--require-approval")
    try:
        assert set(send(port, by_study[first])) == {0}
        wait_for(lambda: len(results(out)) == 1, proc=proc, log=out / "listen.log")
        srs = lambda uid: [i for i in orthanc.instances(uid) if i.get("Modality") == "SR"]  # noqa: E731
        wait_for(lambda: len(srs(first)) == 1, proc=proc, log=out / "listen.log")
        (run / REFERENCE_PROFILE_FILE).write_text('{"chestxr_reference_profile": 1}')  # the approval turns void
        assert set(send(port, by_study[second])) == {0}  # still received and journaled
        wait_for(lambda: "approval" in (out / "listen.log").read_text().split(" listening ", 1)[-1], proc=proc)
        assert len(results(out)) == 1 and srs(second) == []
    finally:
        proc.terminate()
        proc.wait(timeout=60)
