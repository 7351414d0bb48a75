"""Decode-once cache of resized images: every epoch after the first reads a small .npy instead of
decoding a 2000 x 2000 (often JPEG 2000) DICOM again.

Layout: ``ROOT/ab/abcdef....npy`` - uint16 arrays (value = round(pixel * 65535)) whose SHORT side is
``side`` (images smaller than that are stored as they are), so the final transform still performs
the exact letterbox/crop/stretch. The name is the SHA-256 of (absolute path, file size, mtime_ns,
read options, side, cache format version): it never contains the original file name or any patient
identifier, and a changed file, option or side gives a new entry (stale entries are simply unused;
delete the folder to reclaim space). Writes go to a temp file renamed into place, so two DataLoader
workers racing on the same image both end with a complete file.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import numpy as np

from chestxr.core import ChestXRError, ConfigError, ImageReadError
from chestxr.imaging._read_options import ReadOptions
from chestxr.imaging._readers import read_image

CACHE_VERSION = 2  # 2: decoded images pass the content checks (constant, NaN, tiny)
_SCALE = 65535.0


class ImageCache:
    """Decoded + resized image cache under ``root``; see the module docstring.

    ``get(path)`` -> float32 (h, w) in [0, 1] with min(h, w) == side (or the original size when
    smaller). ``hits`` / ``misses`` count this instance's calls.
    """

    def __init__(self, root: str | os.PathLike, *, options: ReadOptions, side: int) -> None:
        if side < 1:
            raise ValueError(f"cache side must be >= 1, got {side}")
        self.root = Path(root)
        self.options = options
        self.side = int(side)
        self.hits = 0
        self.misses = 0

    def __repr__(self) -> str:
        return f"ImageCache({str(self.root)!r}, side={self.side}, options={self.options!r})"

    def key(self, path: str | os.PathLike) -> str:
        """Hex SHA-256 identifying (file identity, options, side). Raises ImageReadError if missing."""
        abspath = os.path.abspath(os.fspath(path))
        try:
            st = os.stat(abspath)
        except FileNotFoundError:
            raise ImageReadError(
                path, "file not found; check the path (relative manifest paths resolve against the manifest's folder)"
            ) from None
        except OSError as exc:
            raise ImageReadError(path, f"cannot stat the file ({exc.strerror})") from None
        payload = {
            "v": CACHE_VERSION,
            "path": abspath,
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "options": self.options.to_dict(),
            "side": self.side,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()

    def path_for(self, path: str | os.PathLike) -> Path:
        """Where the cached array of ``path`` lives (whether or not it exists yet)."""
        key = self.key(path)
        return self.root / key[:2] / f"{key}.npy"

    def contains(self, path: str | os.PathLike) -> bool:
        return self.path_for(path).is_file()

    def get(self, path: str | os.PathLike) -> np.ndarray:
        """float32 (h, w) in [0, 1]; decodes, resizes and stores it on a miss."""
        target = self.path_for(path)
        cached = _load(target)
        if cached is not None:
            self.hits += 1
            return cached
        self.misses += 1
        return self._build(path, target)

    def _build(self, path: str | os.PathLike, target: Path) -> np.ndarray:
        from chestxr.core import write_with_atomic
        from chestxr.imaging._transforms import resize_to

        img = resize_to(read_image(path, self.options), self.side, "short")
        q = np.rint(np.clip(img, 0.0, 1.0) * _SCALE).astype(np.uint16)

        def write(tmp: str) -> None:
            with open(tmp, "wb") as fh:
                np.save(fh, q, allow_pickle=False)

        try:
            write_with_atomic(target, write)
        except OSError as exc:
            raise ChestXRError(
                f"cannot write to the image cache {self.root} ({exc.strerror}); "
                "check free space and permissions or choose another cache dir"
            ) from None
        return q.astype(np.float32) * np.float32(1.0 / _SCALE)

    def build(self, paths: Iterable[str | os.PathLike], *, workers: int = 1, progress: bool = True) -> dict[str, Any]:
        """Fill the cache for ``paths`` (duplicates counted once), ``workers`` processes in parallel.

        Returns {"total", "hits", "built", "failed", "failures": [{"path", "reason"}]}; unreadable
        images are reported, not raised. Progress (chestxr/core/_progress.py): a tqdm bar on a
        terminal, one summary line otherwise; nothing when ``progress`` is False or in quiet mode.
        """
        from chestxr.core import Progress

        unique = list(dict.fromkeys(os.fspath(p) for p in paths))
        counts: dict[str, Any] = {"total": len(unique), "hits": 0, "built": 0, "failed": 0, "failures": []}
        bar = Progress(len(unique), "cache", unit="image", enabled=progress)
        try:
            if workers <= 1 or len(unique) <= 1:
                results: Iterable[tuple[str, str, Optional[str]]] = (self._build_one(p) for p in unique)
                executor = None
            else:
                executor = ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, initargs=(self,))
                chunk = max(1, min(32, len(unique) // (workers * 8)))
                results = executor.map(_build_in_worker, unique, chunksize=chunk)
            for status, p, reason in results:
                if status == "failed":
                    counts["failed"] += 1
                    counts["failures"].append({"path": p, "reason": reason})
                else:
                    counts["hits" if status == "hit" else "built"] += 1
                bar.update(1, built=counts["built"], hits=counts["hits"], failed=counts["failed"])
        finally:
            bar.close()
            if executor is not None:
                executor.shutdown(cancel_futures=True)
        return counts

    def _build_one(self, path: str) -> tuple[str, str, Optional[str]]:
        try:
            target = self.path_for(path)
            if target.is_file():
                return "hit", path, None
            self._build(path, target)
            return "built", path, None
        except ImageReadError as exc:
            return "failed", path, exc.reason
        except ChestXRError as exc:
            return "failed", path, str(exc)
        except Exception as exc:  # a worker must report, not die, on an unexpected decoder error
            return "failed", path, f"unexpected {type(exc).__name__}: {exc}"


_WORKER_CACHE: Optional[ImageCache] = None


def _init_worker(cache: ImageCache) -> None:
    global _WORKER_CACHE
    _WORKER_CACHE = cache
    # one process per core, one thread each; torch is only imported (by resize_to) on a miss
    os.environ["OMP_NUM_THREADS"] = "1"
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def _build_in_worker(path: str) -> tuple[str, str, Optional[str]]:
    assert _WORKER_CACHE is not None
    return _WORKER_CACHE._build_one(path)


def _load(target: Path) -> Optional[np.ndarray]:
    """The cached image as float32 in [0, 1], or None when absent or unreadable (then rebuilt)."""
    try:
        q = np.load(target, allow_pickle=False)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, EOFError):
        return None  # damaged entry (e.g. disk full at write time): rebuild it
    if q.dtype != np.uint16 or q.ndim != 2:
        return None
    return q.astype(np.float32) * np.float32(1.0 / _SCALE)


class ImageLoader:
    """Picklable ``path -> float32 (H, W) in [0, 1]`` for Dataset/DataLoader workers.

    Through an :class:`ImageCache` when one is given, otherwise a direct :func:`read_image`.
    """

    def __init__(self, *, options: ReadOptions, cache: Optional[ImageCache] = None) -> None:
        self.options = options
        self.cache = cache

    def __call__(self, path: str | os.PathLike) -> np.ndarray:
        if self.cache is not None:
            return self.cache.get(path)
        return read_image(path, self.options)

    def __repr__(self) -> str:
        return f"ImageLoader(options={self.options!r}, cache={self.cache!r})"


def build_image_loader(pre: Any, *, cache_dir: str | os.PathLike | None) -> Callable[[str], np.ndarray]:
    """Image loader for PreprocessConfig ``pre``: cached at side ``pre.cache_size`` when ``cache_dir``."""
    options = ReadOptions.from_config(pre)
    if pre.cache_size < pre.size:
        raise ConfigError(
            f"preprocessing.cache_size ({pre.cache_size}) must be >= preprocessing.size "
            f"({pre.size}); the cache would lose resolution"
        )
    cache = ImageCache(cache_dir, options=options, side=pre.cache_size) if cache_dir else None
    return ImageLoader(options=options, cache=cache)
