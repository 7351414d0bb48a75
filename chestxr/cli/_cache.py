"""``chestxr cache build MANIFEST --cache-dir DIR``: decode and resize every image of a manifest once.

Later training runs with ``data.cache_dir: DIR`` (and the same preprocessing) read the small cached
arrays instead of decoding the originals every epoch. Exit code 0 when every image is cached,
1 when some could not be read (they are listed), 2 on a usage error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

MAX_LISTED = 20


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "cache",
        help="manage the decoded-image cache",
        description="Manage the cache of decoded, resized images (decode once, reuse every epoch).",
    )
    sub = parser.add_subparsers(dest="cache_command", metavar="ACTION")
    sub.required = True
    build = sub.add_parser(
        "build",
        help="decode and cache every image listed in a manifest",
        description="Decode and resize every image listed in MANIFEST (read and validated as for "
        "training: column 'path', relative paths resolve against the manifest's folder, backslashes "
        "become '/') into the cache, in parallel.",
    )
    build.add_argument("manifest", metavar="MANIFEST", help="manifest CSV (the one training reads)")
    build.add_argument(
        "--cache-dir", metavar="DIR", default=None, help="cache folder (default: data.cache_dir of the config)"
    )
    build.add_argument(
        "--config",
        metavar="PRESET_OR_YAML",
        default=None,
        help="preset name or YAML file whose 'preprocessing' section to use (default: built-in defaults)",
    )
    build.add_argument(
        "--set",
        dest="overrides",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="config override, e.g. preprocessing.cache_size=320 (repeatable)",
    )
    build.add_argument(
        "--workers",
        metavar="N",
        type=int,
        default=None,
        help="parallel decoding processes (default: data.num_workers of the config)",
    )
    build.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    build.set_defaults(func=run)


def read_manifest_paths(manifest: str | Path) -> list[str]:
    """The image paths of ``manifest`` exactly as training looks them up (cache keys must agree).

    Read with the one manifest reader (:func:`chestxr.data.read_manifest`): backslashes
    become "/", relative paths resolve against the manifest's folder, ``./``/``../`` are normalised.
    Missing files are not an error here; they are counted as failed by the cache build.
    """
    from chestxr.data import read_manifest

    return [str(p) for p in read_manifest(manifest, check_paths=False).frame["path"].tolist()]


def run(args: argparse.Namespace) -> int:
    from chestxr.core import ConfigError, load_config
    from chestxr.imaging import ImageCache, ReadOptions

    config = load_config(args.config, args.overrides)
    pre = config.preprocessing
    cache_dir = args.cache_dir or config.data.cache_dir
    if not cache_dir:
        raise ConfigError("no cache folder: pass --cache-dir DIR or set data.cache_dir in the config")
    workers = args.workers if args.workers is not None else config.data.num_workers
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    if pre.cache_size < pre.size:
        raise ConfigError(f"preprocessing.cache_size ({pre.cache_size}) must be >= preprocessing.size ({pre.size})")
    paths = read_manifest_paths(args.manifest)
    from chestxr.runs import guard_output, protected_inputs

    guard_output(cache_dir, protected_inputs(manifests=[args.manifest], image_paths=paths), option="--cache-dir")
    cache = ImageCache(cache_dir, options=ReadOptions.from_config(pre), side=pre.cache_size)
    counts = cache.build(paths, workers=workers, progress=not args.no_progress)
    print(
        f"cache: {counts['total']} image(s): {counts['built']} built, {counts['hits']} already cached, "
        f"{counts['failed']} failed -> {cache_dir} (side {pre.cache_size})"
    )
    if counts["failed"]:
        for item in counts["failures"][:MAX_LISTED]:
            print(f"  failed: {item['path']}: {item['reason']}", file=sys.stderr)
        more = counts["failed"] - MAX_LISTED
        if more > 0:
            print(f"  ... and {more} more", file=sys.stderr)
        return 1
    return 0
