"""Manifest reading and validation: every rule on hand-built tables with known answers."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chestxr.cli import main
from chestxr.core import ManifestError
from chestxr.data import (
    MAX_LISTED,
    Manifest,
    filter_views,
    manifest_hash,
    read_manifest,
    relative_paths,
    validate_manifest,
    write_manifest,
)


def make(
    tmp_path: Path, text: str, images=("a.png", "b.png", "c.png", "d.png"), name="m.csv", data: bytes | None = None
) -> Path:
    """Write a manifest (text or raw bytes) and empty image files under tmp_path/images."""
    (tmp_path / "images").mkdir(exist_ok=True)
    for im in images:
        (tmp_path / "images" / im).write_bytes(b"x")
    path = tmp_path / name
    path.write_bytes(data if data is not None else text.encode("utf-8"))
    return path


GOOD = (
    "path,patient_id,study_id,view,split,sex,age,site,meta_scanner,Cardiomegaly,Effusion\n"
    "images/a.png,p1,s1,PA,train,F,61,H1,X,1,0\n"
    "images/b.png,p2,s2,ap,val,M,70,H1,Y,0,-1\n"
    "images/c.png,p3,s3,Lateral,test,M,,H2,X,,1\n"
    "images/d.png,p1,s4,PA,train,F,62,H1,X,0.3,0\n"
)


def kinds(problems):
    return [p.kind for p in problems]


def test_read_good_manifest(tmp_path):
    m = read_manifest(make(tmp_path, GOOD))
    assert isinstance(m, Manifest)
    assert m.findings == ["Cardiomegaly", "Effusion"]
    f = m.frame
    assert list(f.columns[:5]) == ["path", "patient_id", "study_id", "view", "split"]
    assert f["path"][0] == str(tmp_path / "images" / "a.png")
    assert list(f["view"]) == ["PA", "AP", "LATERAL", "PA"]
    assert list(f["split"]) == ["train", "val", "test", "train"]
    assert {"sex", "age", "site", "meta_scanner"} <= set(f.columns)
    assert f["age"].dtype == np.float64 and np.isnan(f["age"][2])
    labels = m.labels()
    assert labels.dtype == np.float64 and labels.shape == (4, 2)
    np.testing.assert_array_equal(labels, [[1, 0], [0, -1], [np.nan, 1], [0.3, 0]])
    assert m.source == tmp_path / "m.csv"


def test_defaults_when_optional_columns_absent(tmp_path):
    p = make(tmp_path, "path,patient_id,A\nimages/a.png,p1,1\nimages/b.png,p2,0\n")
    m = read_manifest(p)
    assert list(m.frame["study_id"]) == ["images/a.png", "images/b.png"]  # each image its own study
    assert list(m.frame["view"]) == ["", ""] and list(m.frame["split"]) == ["", ""]


def test_missing_patient_id_is_a_warning(tmp_path):
    p = make(tmp_path, "path,A\nimages/a.png,1\nimages/b.png,0\n")
    r = validate_manifest(p)
    assert r.ok and kinds(r.warnings) == ["missing_column"]
    with pytest.warns(UserWarning, match="patient_id"):
        m = read_manifest(p)
    assert list(m.frame["patient_id"]) == ["", ""]


def test_all_problems_reported_at_once(tmp_path):
    text = (
        "path,patient_id,split,A,B\n"
        "images/a.png,p1,train,1,0\n"
        "images/zz.png,p2,val,yes,0\n"  # row 3: missing file, bad label
        "images/a.png,p3,tune,2,1\n"  # row 4: duplicate path, unknown split, bad label
        "images/b.png,p1,test,-0.5,nan\n"  # row 5: patient p1 in train and test, 2 bad labels
        "images/c.png,,train,0,1\n"
    )  # row 6: blank patient id
    r = validate_manifest(make(tmp_path, text))
    got = sorted((p.kind, p.row, p.column, p.value) for p in r.errors)
    assert got == sorted(
        [
            ("missing_file", 3, "path", "images/zz.png"),
            ("duplicate_path", 4, "path", "images/a.png"),
            ("unknown_split", 4, "split", "tune"),
            ("patient_in_two_splits", 5, "split", "test"),
            ("blank_patient_id", 6, "patient_id", ""),
            ("invalid_label", 3, "A", "yes"),
            ("invalid_label", 4, "A", "2"),
            ("invalid_label", 5, "A", "-0.5"),
            ("invalid_label", 5, "B", "nan"),
        ]
    )
    dup = [p for p in r.errors if p.kind == "duplicate_path"][0]
    assert "row 2" in dup.message and dup.fix
    with pytest.raises(ManifestError) as exc:
        read_manifest(tmp_path / "m.csv")
    assert len(exc.value.problems) == 9
    assert "row 3, column 'A', value 'yes'" in str(exc.value)


@pytest.mark.parametrize("value", ["1", "0", "-1", "1.0", "0.0", "-1.0", "", " 1 ", "0.25", ".5", "1e-1", "-0"])
def test_allowed_label_values(tmp_path, value):
    p = make(tmp_path, f"path,patient_id,A\nimages/a.png,p1,{value}\nimages/b.png,p2,1\nimages/c.png,p3,0\n")
    r = validate_manifest(p)
    assert not r.errors, r.errors


@pytest.mark.parametrize("value", ["yes", "2", "-0.5", "nan", "NaN", "inf", "1_0", "True", "-2", "1.5", "0,5"])
def test_rejected_label_values(tmp_path, value):
    cell = f'"{value}"' if "," in value else value
    p = make(tmp_path, f"path,patient_id,A\nimages/a.png,p1,{cell}\nimages/b.png,p2,1\nimages/c.png,p3,0\n")
    r = validate_manifest(p)
    assert kinds(r.errors) == ["invalid_label"] and r.errors[0].row == 2 and r.errors[0].value == value


def test_no_positive_or_negative_warnings(tmp_path):
    p = make(tmp_path, "path,patient_id,A,B,C\nimages/a.png,p1,0,1,-1\nimages/b.png,p2,0,1,\n")
    r = validate_manifest(p)
    assert r.ok
    got = sorted((p.kind, p.column) for p in r.warnings)
    assert got == [("no_negatives", "B"), ("no_negatives", "C"), ("no_positives", "A"), ("no_positives", "C")]


def test_missing_path_column_and_nih_hint(tmp_path):
    p = make(tmp_path, "Image Index,Finding Labels,Patient ID\nx.png,Mass,1\n")
    r = validate_manifest(p)
    e = [x for x in r.errors if x.kind == "missing_column"]
    assert e and e[0].column == "path" and "--from nih" in e[0].fix


def test_empty_file_and_header_only(tmp_path):
    assert kinds(validate_manifest(make(tmp_path, "", name="e.csv")).errors) == ["empty"]
    assert kinds(validate_manifest(make(tmp_path, "path,patient_id,A\n", name="h.csv")).errors) == ["empty"]
    assert kinds(validate_manifest(tmp_path / "nope.csv").errors) == ["file"]


def test_duplicate_and_unnamed_columns(tmp_path):
    text = "path,patient_id,A,A,B,\nimages/a.png,p1,1,0,1,\nimages/b.png,p2,0,1,0,\n"
    r = validate_manifest(make(tmp_path, text))
    dup = [p for p in r.errors if p.kind == "duplicate_column"]
    assert len(dup) == 1 and dup[0].column == "A" and "columns C, D" in dup[0].message
    assert [p.kind for p in r.warnings] == ["unnamed_column"]  # trailing empty column: ignored
    text2 = "path,patient_id,A,\nimages/a.png,p1,1,oops\n"
    r2 = validate_manifest(make(tmp_path, text2, name="u.csv"))
    assert "unnamed_column" in kinds(r2.errors)


def test_metadata_names_case_insensitive(tmp_path):
    p = make(tmp_path, "Path,Patient_ID,Sex,A\nimages/a.png,p1,F,1\nimages/b.png,p2,M,0\n")
    m = read_manifest(p)
    assert m.findings == ["A"] and list(m.frame["sex"]) == ["F", "M"]
    q = make(tmp_path, "path,Path,A\nimages/a.png,images/b.png,1\n", name="q.csv")
    assert "duplicate_column" in kinds(validate_manifest(q).errors)


def test_field_count_errors_list_every_row(tmp_path):
    text = "path,patient_id,A\nimages/a.png,p1,1\nimages/b.png,p2,0,extra\nimages/c.png,p3\nimages/d.png,p4,1\n"
    r = validate_manifest(make(tmp_path, text))
    assert [(p.kind, p.row) for p in r.errors] == [("field_count", 3), ("field_count", 4)]
    assert "4 fields but the header has 3" in r.errors[0].message
    # the same with quoting (slow csv path) and a quoted comma that is fine
    text2 = 'path,patient_id,A\n"images/a.png",p1,1\nimages/b.png,"p,2",0,extra\n'
    r2 = validate_manifest(make(tmp_path, text2, name="q.csv"))
    assert [(p.kind, p.row) for p in r2.errors] == [("field_count", 3)]


def test_blank_lines_keep_spreadsheet_rows(tmp_path):
    text = "path,patient_id,A\n\nimages/a.png,p1,1\n\nimages/b.png,p2,bad\n"
    r = validate_manifest(make(tmp_path, text))
    assert [(p.kind, p.row) for p in r.errors] == [("invalid_label", 5)]


def test_bom_crlf_and_cr(tmp_path):
    body = "path,patient_id,A\r\nimages/a.png,p1,1\r\nimages/b.png,p2,0\r\n"
    m = read_manifest(make(tmp_path, "", data=b"\xef\xbb\xbf" + body.encode()))
    assert m.findings == ["A"] and len(m) == 2
    m2 = read_manifest(make(tmp_path, "", name="cr.csv", data=body.replace("\r\n", "\r").encode()))
    assert len(m2) == 2 and m2.labels()[:, 0].tolist() == [1.0, 0.0]


def test_non_utf8_names_offset(tmp_path):
    data = "path,patient_id,A\nimages/a.png,Jos\xe9,1\n".encode("latin-1")
    r = validate_manifest(make(tmp_path, "", data=data))
    assert kinds(r.errors) == ["encoding"]
    e = r.errors[0]
    assert "byte 0xe9 at byte offset 34" in e.message and e.row == 2 and "UTF-8" in e.fix
    utf16 = make(tmp_path, "", name="w.csv", data="path,A\n".encode("utf-16"))
    assert "UTF-16" in validate_manifest(utf16).errors[0].message


def test_gzip_manifest(tmp_path):
    make(tmp_path, GOOD)
    gz = tmp_path / "m.csv.gz"
    gz.write_bytes(gzip.compress(GOOD.encode()))
    assert len(read_manifest(gz)) == 4


def test_cap_on_listed_problems(tmp_path):
    rows = "".join(f"images/x{i}.png,p{i},1\n" for i in range(MAX_LISTED + 7))
    r = validate_manifest(make(tmp_path, "path,patient_id,A\n" + rows + "images/a.png,q,0\n"))
    missing = [p for p in r.errors if p.kind == "missing_file"]
    assert len(missing) == MAX_LISTED + 1 and "and 7 more" in missing[-1].message
    assert validate_manifest(tmp_path / "m.csv", check_paths=False).ok


def test_absolute_paths_and_dotdot(tmp_path):
    sub = tmp_path / "lists"
    sub.mkdir()
    make(tmp_path, "x", name="dummy.csv")
    text = (
        f"path,patient_id,A\n{tmp_path}/images/a.png,p1,1\n../images/b.png,p2,0\nimages\\..\\..\\images\\c.png,p3,1\n"
    )
    (sub / "m.csv").write_text(text)
    m = read_manifest(sub / "m.csv")
    assert list(m.frame["path"]) == [str(tmp_path / "images" / n) for n in ("a.png", "b.png", "c.png")]
    # the same file named twice through different spellings is a duplicate
    (sub / "d.csv").write_text(f"path,patient_id,A\n{tmp_path}/images/a.png,p1,1\n../images/a.png,p2,0\n")
    assert kinds(validate_manifest(sub / "d.csv").errors) == ["duplicate_path"]


def test_directory_is_not_an_image(tmp_path):
    (tmp_path / "images" / "dir.png").mkdir(parents=True)
    p = make(tmp_path, "path,patient_id,A\nimages/dir.png,p1,1\nimages/a.png,p2,0\n")
    assert kinds(validate_manifest(p).errors) == ["missing_file"]


def test_split_rules(tmp_path):
    p = make(tmp_path, "path,patient_id,split,A\nimages/a.png,p1,Valid,1\nimages/b.png,p2,,0\n")
    r = validate_manifest(p)
    assert kinds(r.errors) == ["blank_split"] and r.errors[0].row == 3
    q = make(tmp_path, "path,patient_id,split,A\nimages/a.png,p1,,1\nimages/b.png,p2,,0\n", name="q.csv")
    assert list(read_manifest(q).frame["split"]) == ["", ""]  # an empty split column = no split
    v = make(tmp_path, "path,patient_id,split,A\nimages/a.png,p1,VALIDATION,1\nimages/b.png,p2,Train,0\n", name="v.csv")
    assert list(read_manifest(v).frame["split"]) == ["val", "train"]


def test_blank_study_id_falls_back_to_path(tmp_path):
    p = make(tmp_path, "path,patient_id,study_id,A\nimages/a.png,p1,s1,1\nimages/b.png,p2,,0\n")
    with pytest.warns(UserWarning, match="no study_id"):
        m = read_manifest(p)
    assert list(m.frame["study_id"]) == ["s1", "images/b.png"]


def test_explicit_findings_and_aliases(tmp_path):
    p = make(
        tmp_path,
        "path,patient_id,Pleural Effusion,Cardiomegaly,notes\n"
        "images/a.png,p1,1,0,free text\nimages/b.png,p2,0,1,more\n",
    )
    m = read_manifest(p, findings=["Effusion", "Cardiomegaly"])
    assert m.findings == ["Effusion", "Cardiomegaly"]
    assert m.frame["Effusion"].tolist() == [1.0, 0.0] and m.frame["notes"].tolist() == ["free text", "more"]
    r = validate_manifest(p, findings=["Edema"])
    assert kinds(r.errors) == ["missing_finding"] and "Pleural Effusion" in r.errors[0].fix
    # without findings=, the free-text column is a finding with invalid values
    assert "invalid_label" in kinds(validate_manifest(p).errors)


def test_no_finding_columns_warns(tmp_path):
    r = validate_manifest(make(tmp_path, "path,patient_id\nimages/a.png,p1\n"))
    assert r.ok and "no_findings" in kinds(r.warnings)


def test_views_filter(tmp_path):
    text = (
        "path,patient_id,view,A\nimages/a.png,p1,PA,1\nimages/b.png,p2,AP Supine,0\n"
        "images/c.png,p3,LL,1\nimages/d.png,p4,lateral,0\n"
    )
    p = make(tmp_path, text)
    assert list(read_manifest(p, views=["frontal"]).frame["view"]) == ["PA", "AP_SUPINE"]
    assert list(read_manifest(p, views=["PA"]).frame["view"]) == ["PA"]
    assert list(read_manifest(p, views=["lateral"]).frame["view"]) == ["LL", "LATERAL"]
    with pytest.raises(ManifestError, match="views present"):
        read_manifest(p, views=["RAO"])
    m = read_manifest(p)
    assert len(filter_views(m, ["ap_supine"])) == 1


def test_write_roundtrip_relative_paths_and_hash(tmp_path):
    m = read_manifest(make(tmp_path, GOOD))
    out = tmp_path / "runs" / "r1" / "splits.csv"
    write_manifest(m, out)
    text = out.read_text()
    assert text.splitlines()[1].startswith("../../images/a.png,p1,s1,PA,train")
    assert ",0.3,0\n" in text and ",0,-1\n" in text
    m2 = read_manifest(out)
    pd.testing.assert_frame_equal(m.frame, m2.frame)
    assert m2.findings == m.findings
    # the hash uses paths relative to the manifest's folder: a copy beside the original hashes
    # the same, one in another folder (paths now ../../images/...) does not
    assert manifest_hash(m2) != manifest_hash(m)
    write_manifest(m2, tmp_path / "copy.csv")
    assert manifest_hash(read_manifest(tmp_path / "copy.csv")) == manifest_hash(m)
    m3 = read_manifest(tmp_path / "m.csv")
    m3.frame.loc[0, "Cardiomegaly"] = 0.0
    assert manifest_hash(m3) != manifest_hash(m)
    shuffled = Manifest(m.frame.iloc[::-1].reset_index(drop=True), m.findings, m.source)
    assert manifest_hash(shuffled) == manifest_hash(m)
    assert len(manifest_hash(m)) == 64


def test_write_quotes_and_drops_empty_columns(tmp_path):
    frame = pd.DataFrame(
        {"path": ["a,b.png", 'c"d.png'], "patient_id": ["1", "2"], "split": ["", ""], "A": [1.0, np.nan]}
    )
    out = tmp_path / "w.csv"
    write_manifest(frame, out)
    assert out.read_text() == 'path,patient_id,A\n"a,b.png",1,1\n"c""d.png",2,\n'


def test_relative_paths_helper(tmp_path):
    assert relative_paths(["/x/y/a.png", "rel/b.png", "/x/z/c.png"], "/x/y") == ["a.png", "rel/b.png", "../z/c.png"]


def test_cli_validate(tmp_path, capsys):
    p = make(tmp_path, GOOD)
    assert main(["manifest", "validate", str(p)]) == 0
    assert "valid: 0 error(s)" in capsys.readouterr().out
    bad = make(tmp_path, "path,patient_id,A\nimages/a.png,p1,yes\nimages/q.png,p2,1\n", name="bad.csv")
    assert main(["manifest", "validate", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "ERROR   row 2, column 'A', value 'yes'" in out and "row 3, column 'path'" in out
    assert "fix:" in out and "2 error(s)" in out
    assert main(["manifest", "validate", str(bad), "--no-check-paths"]) == 1
    assert "1 error(s), 1 warning(s)" in capsys.readouterr().out
    warn_only = make(tmp_path, "path,A\nimages/a.png,1\nimages/b.png,0\n", name="w.csv")
    assert main(["manifest", "validate", str(warn_only)]) == 0
    assert "WARNING" in capsys.readouterr().out
    assert main(["manifest", "validate", str(bad), "--findings", "B"]) == 1
    assert "finding column 'B' not found" in capsys.readouterr().out


def test_example_manifest_in_repo(shared_data):
    """data_manifests/example_multilabel.csv shows every value kind and validates in place."""
    path = Path(__file__).resolve().parents[2] / "data_manifests" / "example_multilabel.csv"
    check = shared_data.parent.resolve() == (path.parent / ".." / ".." / "shared").resolve()
    r = validate_manifest(path, check_paths=check)
    assert r.ok and not r.warnings, (r.errors, r.warnings)
    m = read_manifest(path, check_paths=check)
    assert m.findings == ["Cardiomegaly", "Effusion", "Edema", "No Finding"]
    labels = m.labels()
    assert (labels == -1).sum() == 2 and np.isnan(labels).sum() == 2 and (labels == 0.7).sum() == 1
    assert sorted(set(m.frame["split"])) == ["test", "train", "val"]
