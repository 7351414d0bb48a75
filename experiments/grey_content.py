"""How many colour-saved radiographs chestxr reads as grey (issue 24.5), on a set built from the real NIH images.

Each NIH image (8-bit grey PNG) is saved in the colour containers public collections use, and as real colour:

    grey content:  RGB PNG, RGBA PNG, palette PNG with a transparent index, CMYK JPEG, RGB JPEG q75 (4:2:0),
                   RGB JPEG q95 of the image with +-3 independent channel noise (a noisy scanner), DICOM RGB
    real colour:   a colour map, a sepia tint (R, 0.9 G, 0.75 B), a 3x3 red marker, a faint blue cast (B + 12)

Every file is read with the default ReadOptions (allow_color false). Printed and written to
experiments/results/grey_content.json: per kind, files read as grey now, files the previous rule (grey modes and
all-grey palettes only) accepted, and the largest per-pixel channel difference seen (of 255).

    python experiments/grey_content.py [--limit N] [--shared PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

GREY_KINDS = (
    "rgb.png",
    "rgba.png",
    "palette_transparent.png",
    "cmyk.jpg",
    "rgb_q75.jpg",
    "rgb_noise3_q95.jpg",
    "rgb.dcm",
)
COLOUR_KINDS = ("colour_map.png", "sepia.png", "red_marker.png", "blue_cast.png")


def write_variants(g: np.ndarray, folder: Path, seed: int) -> dict[str, Path]:
    from dicom_factory import write_dicom

    rgb = np.repeat(g[..., None], 3, -1)
    gi = g.astype(int)
    out = {k: folder / k for k in GREY_KINDS + COLOUR_KINDS}
    Image.fromarray(rgb).save(out["rgb.png"])
    Image.fromarray(np.dstack([rgb, np.full_like(g, 255)]), "RGBA").save(out["rgba.png"])
    Image.fromarray(g).convert("P").save(out["palette_transparent.png"], transparency=0)
    Image.fromarray(g).convert("CMYK").save(out["cmyk.jpg"], quality=90)
    Image.fromarray(rgb).save(out["rgb_q75.jpg"], quality=75, subsampling=2)
    noisy = np.clip(rgb.astype(int) + np.random.default_rng(seed).integers(-3, 4, rgb.shape), 0, 255)
    Image.fromarray(noisy.astype(np.uint8)).save(out["rgb_noise3_q95.jpg"], quality=95)
    write_dicom(out["rgb.dcm"], rgb, photometric="RGB")
    cmap = np.stack([gi, 255 - gi, np.abs(128 - gi) * 2], -1).clip(0, 255).astype(np.uint8)
    Image.fromarray(cmap).save(out["colour_map.png"])
    Image.fromarray(np.stack([gi, gi * 0.9, gi * 0.75], -1).astype(np.uint8)).save(out["sepia.png"])
    marker = rgb.copy()
    marker[20:23, 20:23] = (255, 0, 0)
    Image.fromarray(marker).save(out["red_marker.png"])
    cast = rgb.astype(int)
    cast[..., 2] += 12
    Image.fromarray(cast.clip(0, 255).astype(np.uint8)).save(out["blue_cast.png"])
    return out


def old_rule_accepts(path: Path) -> bool:
    """The rule before issue 24: grey Pillow modes, all-grey palettes without transparency, DICOM MONOCHROME."""
    if path.suffix == ".dcm":
        return False  # every DICOM here is RGB
    with Image.open(path) as im:
        if im.mode in ("1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
            return True
        if im.mode == "P" and "transparency" not in im.info:
            pal = np.asarray(im.getpalette() or []).reshape(-1, 3)
            return bool(len(pal)) and bool((pal == pal[:, :1]).all())
    return False


def spread_255(path: Path) -> int:
    if path.suffix == ".dcm":
        import pydicom

        a = pydicom.dcmread(path).pixel_array.astype(int)
    else:
        with Image.open(path) as im:
            a = np.asarray(im.convert("RGB")).astype(int)
    return int((a.max(-1) - a.min(-1)).max())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=0, help="first N NIH images (0: all)")
    ap.add_argument("--shared", default=os.environ.get("CHESTXR_SHARED", str(REPO.parent / "shared")))
    ap.add_argument("--results", default=str(REPO / "experiments" / "results" / "grey_content.json"))
    args = ap.parse_args(argv)

    from chestxr.core import ImageReadError
    from chestxr.imaging import read_image

    images = sorted((Path(args.shared) / "data" / "nih14" / "images").glob("*.png"))
    if args.limit:
        images = images[: args.limit]
    if not images:
        print(f"no NIH images under {args.shared}/data/nih14/images", file=sys.stderr)
        return 2
    stats = {
        k: {"files": 0, "read_as_grey": 0, "old_rule_accepted": 0, "max_spread_255": 0}
        for k in GREY_KINDS + COLOUR_KINDS
    }
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for n, src in enumerate(images):
            g = np.asarray(Image.open(src).convert("L"))
            folder = Path(tmp) / str(n)
            folder.mkdir()
            for kind, path in write_variants(g, folder, seed=n).items():
                s = stats[kind]
                s["files"] += 1
                s["old_rule_accepted"] += old_rule_accepts(path)
                s["max_spread_255"] = max(s["max_spread_255"], spread_255(path))
                try:
                    read_image(path)
                    s["read_as_grey"] += 1
                except ImageReadError:
                    pass
    grey = {k: stats[k] for k in GREY_KINDS}
    colour = {k: stats[k] for k in COLOUR_KINDS}
    summary = {
        "nih_images": len(images),
        "grey_content_files": sum(s["files"] for s in grey.values()),
        "grey_content_read_as_grey": sum(s["read_as_grey"] for s in grey.values()),
        "grey_content_old_rule_accepted": sum(s["old_rule_accepted"] for s in grey.values()),
        "real_colour_files": sum(s["files"] for s in colour.values()),
        "real_colour_read_as_grey": sum(s["read_as_grey"] for s in colour.values()),
        "seconds": round(time.time() - t0, 1),
        "load_average": open("/proc/loadavg").read().split()[:3] if Path("/proc/loadavg").exists() else None,
        "per_kind": stats,
    }
    print(f"{'kind':28s} {'files':>6s} {'grey now':>9s} {'grey before':>12s} {'max spread /255':>16s}")
    for kind, s in stats.items():
        print(
            f"{kind:28s} {s['files']:6d} {s['read_as_grey']:9d} {s['old_rule_accepted']:12d} {s['max_spread_255']:16d}"
        )
    print(
        f"grey content: {summary['grey_content_read_as_grey']} of {summary['grey_content_files']} read as grey "
        f"(before: {summary['grey_content_old_rule_accepted']}); real colour: {summary['real_colour_read_as_grey']} "
        f"of {summary['real_colour_files']} read as grey; {summary['seconds']} s, load {summary['load_average']}"
    )
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
