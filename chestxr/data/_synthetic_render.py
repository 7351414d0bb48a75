"""Rendering of one synthetic frontal chest radiograph: anatomy drawn per patient, findings drawn in place.

Each image is a cartoon of a PA/AP chest film: dark lung fields in a brighter body, mediastinum and
spine, a heart shadow, diaphragm domes, clavicles, rib texture, smooth noise, varying exposure and a
small random shift/rotation/scale. Four findings change the image in a localized, learnable way:

- ``Opacity``: a soft, textured bright blob inside a lung field;
- ``Cardiomegaly``: a wider heart shadow (cardiothoracic ratio 0.56-0.68 instead of ~0.40-0.48);
- ``Effusion``: fluid at one lung base with a meniscus top, which blunts the costophrenic angle;
- ``Nodule``: a small round bright spot, 5-8% of the image width across (5-8 px at the demo's 96 px:
  at 3-6% the demo's CNN found half of them at best - test AUROC 0.69-0.74 - so the demo failed its
  own bar depending on the thread count).

``severity`` in [0, 1] scales how visible a finding is; faint findings are the ones most often
labelled uncertain (-1). Deterministic given the generator: the same rng gives the same pixels.
Images are float32 (size, size) in [0, 1]; chestxr/data/_synthetic.py plans whole datasets and writes them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Mapping

import numpy as np

from chestxr.core import ConfigError

FINDINGS: tuple[str, ...] = ("Opacity", "Cardiomegaly", "Effusion", "Nodule")


@dataclass(frozen=True)
class Anatomy:
    """A patient's body habitus in normalized image coordinates (u: -1 left .. 1 right, v: -1 top .. 1 bottom)."""

    body_ax: float
    lung_cx: float  # distance of each lung's centre from the midline
    lung_cy: float
    lung_ax: tuple[float, float]  # (image-left = patient's right, image-right = patient's left)
    lung_ay: float
    dome_v: tuple[float, float]  # highest point of each diaphragm dome
    dome_k: float
    ctr: float  # cardiothoracic ratio without cardiomegaly
    heart_cy: float
    heart_ay: float
    tissue: float
    lung_dark: float
    rib_freq: float
    rib_phase: float


def draw_anatomy(rng: np.random.Generator) -> Anatomy:
    """Draw one patient's anatomy (always 15 draws from ``rng``)."""
    u = rng.uniform(size=15)
    lerp = lambda i, a, b: float(a + (b - a) * u[i])  # noqa: E731
    return Anatomy(
        body_ax=lerp(0, 0.84, 0.95),
        lung_cx=lerp(1, 0.35, 0.40),
        lung_cy=lerp(2, -0.12, -0.05),
        lung_ax=(lerp(3, 0.25, 0.29), lerp(4, 0.23, 0.27)),
        lung_ay=lerp(5, 0.62, 0.70),
        dome_v=(lerp(6, 0.34, 0.40), lerp(7, 0.40, 0.46)),
        dome_k=lerp(8, 1.4, 2.0),
        ctr=lerp(9, 0.40, 0.50),
        heart_cy=lerp(10, 0.06, 0.12),
        heart_ay=lerp(11, 0.22, 0.27),
        tissue=lerp(12, 0.52, 0.62),
        lung_dark=lerp(13, 0.30, 0.38),
        rib_freq=lerp(14, 4.2, 5.2),
        rib_phase=float(rng.uniform(0, 2 * math.pi)),
    )


def _sig(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _ellipse(u: np.ndarray, v: np.ndarray, cu: float, cv: float, au: float, av: float, edge: float) -> np.ndarray:
    """Soft ellipse mask in [0, 1]; ``edge`` is the blur width in normalized units."""
    r = np.sqrt(((u - cu) / au) ** 2 + ((v - cv) / av) ** 2)
    return _sig((1.0 - r) * min(au, av) / edge)


@lru_cache(maxsize=16)
def _upsampler(size: int, cells: int) -> np.ndarray:
    """(size, cells) matrix doing bicubic-spline upsampling of a length-``cells`` signal to ``size``."""
    from scipy.ndimage import zoom

    eye = np.eye(cells)
    cols = [zoom(e, size / cells, order=3, mode="reflect", grid_mode=True)[:size] for e in eye]
    return np.stack(cols, axis=1).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Band-limited noise, float32 (size, size), unit-ish amplitude: a coarse random grid, upsampled."""
    m = _upsampler(size, cells)
    # einsum without BLAS: tiny products, and BLAS threads stall on a busy machine
    return np.einsum("ik,jk->ij", m @ rng.standard_normal((cells, cells), dtype=np.float32), m)


def render_chest(
    rng: np.random.Generator,
    *,
    size: int = 256,
    findings_present: Mapping[str, bool] | None = None,
    severity: float | Mapping[str, float] = 1.0,
    anatomy: Anatomy | None = None,
) -> np.ndarray:
    """Render one synthetic frontal chest radiograph.

    The number of draws from ``rng`` does not depend on ``findings_present`` or ``severity``, so
    the same seed with a finding switched on and off gives the same anatomy, pose and noise.
    ``anatomy``: a patient's :class:`Anatomy` (drawn from ``rng`` when None).
    Returns float32 (size, size) in [0, 1], bright = dense (bone, fluid), dark = air.
    """
    present = {f: bool((findings_present or {}).get(f, False)) for f in FINDINGS}
    unknown = set(findings_present or {}) - set(FINDINGS)
    if unknown:
        raise ConfigError(f"unknown synthetic finding(s) {sorted(unknown)}; choose from {list(FINDINGS)}")
    sev = {f: float(severity.get(f, 1.0) if isinstance(severity, Mapping) else severity) for f in FINDINGS}
    sev = {f: min(max(s, 0.0), 1.0) for f, s in sev.items()}
    a = anatomy if anatomy is not None else draw_anatomy(rng)

    # pose, exposure and per-finding geometry: a fixed number of draws whatever is present
    shift = [float(t) for t in rng.uniform(-0.06, 0.06, size=2)]
    rot, scale = math.radians(rng.uniform(-5.0, 5.0)), rng.uniform(0.92, 1.06)
    gain, offset, gamma = rng.uniform(0.85, 1.15), rng.uniform(-0.05, 0.05), rng.uniform(0.8, 1.25)
    op_side, op_r, op_t, op_sigma = rng.integers(2), rng.uniform(), rng.uniform(0, 2 * math.pi), rng.uniform(0.12, 0.20)
    no_side, no_r, no_t, no_diam = rng.integers(2), rng.uniform(), rng.uniform(0, 2 * math.pi), rng.uniform(0.05, 0.08)
    ef_side, ef_slope = rng.integers(2), rng.uniform(1.2, 1.8)
    smooth = _smooth_noise(rng, size, 10)
    texture = _smooth_noise(rng, size, 24)
    fine = rng.standard_normal((size, size), dtype=np.float32)

    # pixel grid -> anatomical coordinates (inverse of shift, rotation, scale)
    x = ((np.arange(size) + 0.5) / size * 2.0 - 1.0).astype(np.float32)
    xx, yy = np.meshgrid(x, x)
    xs, ys = xx - shift[0], yy - shift[1]
    c, s = math.cos(rot), math.sin(rot)
    u, v = (c * xs + s * ys) / scale, (-s * xs + c * ys) / scale
    edge = 0.015

    img = 0.08 + (a.tissue - 0.08) * _ellipse(u, v, 0.0, 0.15, a.body_ax, 1.25, 0.03)
    img += 0.10 * _sig((0.06 - np.abs(u)) / 0.01) * (0.8 + 0.2 * np.cos(v * 28.0)) * (v > -0.8)  # spine
    img -= 0.12 * _sig((0.025 - np.abs(u)) / 0.008) * _sig((-0.25 - v) / 0.02)  # trachea

    # lungs: ellipses cut by the diaphragm domes (dome highest at the lung centre)
    sides, lungs = (-1.0, 1.0), []
    for i, sd in enumerate(sides):
        cu = sd * a.lung_cx
        dome = a.dome_v[i] + a.dome_k * (u - cu) ** 2
        lungs.append(_ellipse(u, v, cu, a.lung_cy, a.lung_ax[i], a.lung_ay, edge) * _sig((dome - v) / edge))
    lung = lungs[0] + lungs[1]
    ribs = np.clip(np.sin(2 * math.pi * a.rib_freq * (v - 0.35 * np.abs(u)) + a.rib_phase), 0.0, 1.0) ** 2
    air = lung.copy()
    if present["Effusion"]:  # fluid over one dome, its top rising laterally (meniscus); blunts the angle
        i = int(ef_side)
        cu, ax = sides[i] * a.lung_cx, a.lung_ax[i]
        lateral = np.clip((u - cu) * sides[i] / ax, -1.0, 1.0) * 0.5 + 0.5  # 0 medial .. 1 lateral
        top = a.dome_v[i] - (0.06 + 0.20 * sev["Effusion"]) * (0.3 + ef_slope * lateral)
        air -= lungs[i] * _sig((v - top) / 0.012) * (0.75 + 0.2 * sev["Effusion"])
    img -= air * a.lung_dark * (1.0 - 0.18 * ribs + 0.10 * texture)

    # heart: spans about -0.35w .. +0.65w around the midline, w = ctr * thoracic width
    thorax = 2 * a.lung_cx + a.lung_ax[0] + a.lung_ax[1]
    ctr = 0.56 + 0.12 * sev["Cardiomegaly"] if present["Cardiomegaly"] else a.ctr
    w = ctr * thorax
    heart = _ellipse(u, v, 0.15 * w, a.heart_cy + 0.1 * (ctr - 0.45), w / 2, a.heart_ay * (ctr / 0.45) ** 0.4, 0.02)
    img += heart * np.maximum(a.tissue + 0.04 - img, 0.0) * 0.9  # fills the lung, leaves the spine

    def in_lung(side: int, r: float, t: float) -> tuple[float, float]:
        cu, ax = sides[side] * a.lung_cx, a.lung_ax[side]
        pu, pv = cu + 0.6 * math.sqrt(r) * ax * math.cos(t), a.lung_cy + 0.6 * math.sqrt(r) * a.lung_ay * math.sin(t)
        return pu, min(pv, a.dome_v[side] - 0.12)

    if present["Opacity"]:
        pu, pv = in_lung(int(op_side), op_r, op_t)
        blob = np.exp(-((u - pu) ** 2 + (v - pv) ** 2) / (2 * op_sigma**2)) * (1.0 + 0.3 * texture)
        img += (0.20 + 0.22 * sev["Opacity"]) * blob * np.clip(lungs[int(op_side)] * 1.2, 0.0, 1.0)
    if present["Nodule"]:
        pu, pv = in_lung(int(no_side), no_r, no_t)
        radius = no_diam  # diameter as a fraction of image width (2 units) = radius in units
        img += (0.22 + 0.20 * sev["Nodule"]) * _sig((radius - np.hypot(u - pu, v - pv)) / (0.12 * radius))

    au = np.abs(u)  # clavicles: bands from near the midline rising laterally
    img += 0.12 * _sig((0.035 - np.abs(v + 0.68 + 0.18 * (au - 0.1))) / 0.008) * ((au > 0.08) & (au < 0.75))

    img += 0.025 * smooth + 0.012 * fine
    img = np.clip(gain * img + offset, 0.0, 1.0) ** gamma
    return img.astype(np.float32)
