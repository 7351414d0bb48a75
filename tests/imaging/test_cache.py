"""chestxr/imaging/_cache.py: hits, keys, file names, atomic writes, parallel build, the `cache build` CLI."""

from __future__ import annotations

import os
import pickle
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from dicom_factory import IDENTIFIERS, block_image, write_dicom
from PIL import Image

from chestxr.cli import main
from chestxr.core import ConfigError, ImageReadError, PreprocessConfig
from chestxr.imaging import ImageCache, ReadOptions, build_image_loader, read_image, resize_to

NAME_RE = re.compile(r"^[0-9a-f]{2}/[0-9a-f]{64}\.npy$")


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


@pytest.fixture()
def images(tmp_path) -> list[Path]:
    """Three readable images whose names carry identifiers (as hospital exports often do)."""
    src = tmp_path / "src"
    src.mkdir()
    pid = IDENTIFIERS["PatientID"]
    a = write_dicom(src / f"{pid}_Doe^Jane.dcm", block_image(shape=(40, 60)), bits_stored=12)
    b = write_dicom(src / f"{pid}_2.dcm", block_image(shape=(30, 30)), photometric="MONOCHROME1")
    c = src / f"{pid}_3.png"
    Image.fromarray(np.arange(64 * 80, dtype=np.uint32).reshape(64, 80).astype(np.uint8)).save(c)
    return [a, b, c]


def test_get_miss_then_hit_equal(tmp_path, images):
    cache = ImageCache(tmp_path / "c", options=ReadOptions(), side=20)
    first = cache.get(images[0])
    assert (cache.hits, cache.misses) == (0, 1)
    second = cache.get(images[0])
    assert (cache.hits, cache.misses) == (1, 1)
    np.testing.assert_array_equal(first, second)
    assert first.dtype == np.float32 and first.shape == (20, 30)  # short side = 20, aspect kept
    expected = resize_to(read_image(images[0]), 20, "short")
    np.testing.assert_allclose(first, expected, atol=0.5 / 65535 + 1e-7)  # uint16 quantisation only
    small = cache.get(images[1])  # 30 x 30 > 20 -> 20 x 20; smaller images are kept as they are
    assert small.shape == (20, 20)
    assert ImageCache(tmp_path / "c2", options=ReadOptions(), side=100).get(images[1]).shape == (30, 30)


def test_keys_change_with_options_side_and_file(tmp_path, images):
    path = images[0]
    base = ImageCache(tmp_path / "c", options=ReadOptions(), side=20)
    keys = {
        base.key(path),
        ImageCache(tmp_path / "c", options=ReadOptions(voi="ignore"), side=20).key(path),
        ImageCache(tmp_path / "c", options=ReadOptions(voi="window", window=(500, 800)), side=20).key(path),
        ImageCache(tmp_path / "c", options=ReadOptions(), side=24).key(path),
        base.key(images[1]),
    }
    assert len(keys) == 5
    assert base.key(path) == ImageCache(tmp_path / "other", options=ReadOptions(), side=20).key(path)
    before = base.key(path)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert base.key(path) != before  # a re-exported file is decoded again
    with pytest.raises(ImageReadError, match="file not found"):
        base.key(tmp_path / "missing.dcm")


def test_file_names_are_hashes_only(tmp_path, images):
    root = tmp_path / "c"
    cache = ImageCache(root, options=ReadOptions(), side=16)
    for p in images:
        cache.get(p)
    names = _files(root)
    assert len(names) == 3 and all(NAME_RE.match(n) for n in names)
    joined = " ".join(names)
    for value in list(IDENTIFIERS.values()) + ["Doe", "PID", "src"]:
        assert value not in joined
    for p in images:
        assert p.stem not in joined
    assert np.load(root / names[0]).dtype == np.uint16


def test_damaged_entry_is_rebuilt_and_no_temp_files(tmp_path, images):
    cache = ImageCache(tmp_path / "c", options=ReadOptions(), side=16)
    good = cache.get(images[0])
    cache.path_for(images[0]).write_bytes(b"\x93NUMPY garbage")
    np.testing.assert_array_equal(cache.get(images[0]), good)
    assert cache.misses == 2
    assert not [n for n in _files(tmp_path / "c") if n.endswith(".tmp")]


def test_concurrent_gets_of_one_image(tmp_path, images):
    cache = ImageCache(tmp_path / "c", options=ReadOptions(), side=16)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: cache.get(images[0]), range(8)))
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])
    assert len(_files(tmp_path / "c")) == 1  # renames replaced each other; no partial file, no temp left


def test_parallel_build_counts_and_failures(tmp_path, images):
    broken = tmp_path / "src" / "broken.dcm"
    broken.write_bytes(b"not a dicom at all")
    cache = ImageCache(tmp_path / "c", options=ReadOptions(), side=16)
    paths = [*images, images[0], broken]  # a duplicate is counted once
    counts = cache.build(paths, workers=2, progress=True)  # bar hidden by CHESTXR_NO_PROGRESS
    assert (counts["total"], counts["built"], counts["hits"], counts["failed"]) == (4, 3, 0, 1)
    assert counts["failures"][0]["path"] == str(broken)
    assert "not a DICOM, PNG, JPEG, TIFF or BMP" in counts["failures"][0]["reason"]
    again = cache.build(images, workers=2, progress=False)
    assert (again["hits"], again["built"], again["failed"]) == (3, 0, 0)
    # what the workers stored is what a serial get computes
    serial = ImageCache(tmp_path / "serial", options=ReadOptions(), side=16)
    for p in images:
        np.testing.assert_array_equal(cache.get(p), serial.get(p))


def test_image_loader_picklable_with_and_without_cache(tmp_path, images):
    pre = PreprocessConfig(size=16, cache_size=20)
    direct = pickle.loads(pickle.dumps(build_image_loader(pre, cache_dir=None)))
    np.testing.assert_array_equal(direct(images[0]), read_image(images[0]))
    cached = pickle.loads(pickle.dumps(build_image_loader(pre, cache_dir=str(tmp_path / "c"))))
    out = cached(images[0])
    assert out.shape == (20, 30) and len(_files(tmp_path / "c")) == 1
    with pytest.raises(ConfigError, match="cache_size"):
        build_image_loader(PreprocessConfig(size=64, cache_size=32), cache_dir=str(tmp_path))
    window = build_image_loader(PreprocessConfig(voi="window", window=(550.0, 900.0)), cache_dir=None)
    assert window.options.voi == "window"


def test_cli_cache_build(tmp_path, images, capsys):
    manifest = tmp_path / "manifest.csv"
    rel = [os.path.relpath(p, tmp_path) for p in images]
    manifest.write_text("path,patient_id\n" + "".join(f"{r},x{i}\n" for i, r in enumerate(rel)))
    cache_dir = tmp_path / "cache"
    rc = main(
        [
            "cache",
            "build",
            str(manifest),
            "--cache-dir",
            str(cache_dir),
            "--workers",
            "1",
            "--set",
            "preprocessing.cache_size=24",
            "--set",
            "preprocessing.size=16",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "3 image(s): 3 built, 0 already cached, 0 failed" in out
    assert len(_files(cache_dir)) == 3
    # the same preprocessing -> the loader finds every image in the cache
    loader = build_image_loader(PreprocessConfig(size=16, cache_size=24), cache_dir=str(cache_dir))
    for p in images:
        loader(p)
    assert loader.cache.hits == 3 and loader.cache.misses == 0
    rc = main(
        [
            "cache",
            "build",
            str(manifest),
            "--cache-dir",
            str(cache_dir),
            "--workers",
            "2",
            "--set",
            "preprocessing.cache_size=24",
            "--set",
            "preprocessing.size=16",
        ]
    )
    assert rc == 0 and "0 built, 3 already cached" in capsys.readouterr().out


def test_cli_cache_build_errors(tmp_path, images, capsys):
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path\n{images[0]}\nmissing.png\n")
    rc = main(["cache", "build", str(manifest), "--cache-dir", str(tmp_path / "c"), "--workers", "1"])
    captured = capsys.readouterr()
    assert rc == 1 and "1 built" in captured.out and "1 failed" in captured.out
    assert "missing.png: file not found" in captured.err
    nocol = tmp_path / "nocol.csv"
    nocol.write_text("file\na.png\n")
    assert main(["cache", "build", str(nocol), "--cache-dir", str(tmp_path / "c")]) == 2
    assert "required column 'path' is missing" in capsys.readouterr().err  # the manifest reader's own message
    assert main(["cache", "build", str(manifest)]) == 2
    assert "--cache-dir" in capsys.readouterr().err


def test_real_dicom_through_cache(shared_data, tmp_path):
    src = shared_data / "dicom" / "gdcm-CR-MONO1-10-chest.dcm"
    if not src.is_file():
        pytest.skip(f"{src} not present")
    cache = ImageCache(tmp_path / "c", options=ReadOptions(), side=64)
    a = cache.get(src)
    b = cache.get(src)
    assert a.shape == (64, 64) and cache.hits == 1
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, resize_to(read_image(src), 64, "short"), atol=1e-5)
