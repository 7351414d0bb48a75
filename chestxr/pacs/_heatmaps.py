"""Grad-CAM overlays as DICOM Secondary Capture images, labelled "not for diagnostic use".

For each positive finding of an image, the map :func:`chestxr.reporting.grad_cam` computed (in
the model's input geometry) is blended over the image as the model saw it (the run's resize: letterbox /
crop / stretch, so map and anatomy line up), "NOT FOR DIAGNOSTIC USE" and the finding are burned into the
pixels, and the same words go into SeriesDescription, ImageComments and DerivationDescription.
The SC is filed in the source image's patient and study (highdicom copies them), in its own series, with
UIDs derived from the source image, finding and model weights (storing it twice files it once).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from chestxr.pacs._dicom_text import set_character_set, text
from chestxr.pacs._extras import require
from chestxr.pacs._sr import derived_uid

LABEL = "NOT FOR DIAGNOSTIC USE"
SERIES_NUMBER = 9902
SERIES_DESCRIPTION = f"chestxr Grad-CAM heat maps - {LABEL}"
OUTPUT_SIDE = 512


def overlay_rgb(image: np.ndarray, heat: np.ndarray, *, size: int, resize: str, finding: str) -> np.ndarray:
    """(OUTPUT_SIDE, OUTPUT_SIDE, 3) uint8: ``heat`` ((size, size) [0, 1]) over ``image`` ((H, W) [0, 1])
    resized like the model input, with the label and the finding burned in at the top."""
    import torch
    from PIL import Image, ImageDraw

    from chestxr.imaging import resize_square
    from chestxr.reporting import overlay_heatmap

    base = resize_square(torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None], size, resize)[0]
    rgb = overlay_heatmap(base.numpy(), heat)
    pil = Image.fromarray((np.clip(rgb, 0, 1) * 255).round().astype(np.uint8), mode="RGB")
    pil = pil.resize((OUTPUT_SIDE, OUTPUT_SIDE), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(pil)
    draw.rectangle((0, 0, OUTPUT_SIDE, 30), fill=(0, 0, 0))
    draw.text((6, 3), LABEL, fill=(255, 255, 0))
    draw.text((6, 16), f"Grad-CAM: {finding} (where the model looked)", fill=(255, 255, 255))
    return np.asarray(pil, dtype=np.uint8)


def build_heatmap_sc(source: Any, rgb: np.ndarray, *, finding: str, weights_sha256: str, number: int) -> Any:
    """A Secondary Capture dataset of ``rgb`` ((h, w, 3) uint8) in ``source``'s patient and study."""
    require("highdicom")
    from highdicom.sc import SCImage

    from chestxr import __version__

    orientation = tuple(str(v) for v in (source.get("PatientOrientation") or []))
    with warnings.catch_warnings():  # highdicom's warnings quote header values (names): never print them
        warnings.simplefilter("ignore")
        sc = SCImage.from_ref_dataset(
            ref_dataset=source,
            pixel_array=rgb,
            photometric_interpretation="RGB",
            bits_allocated=8,
            coordinate_system="PATIENT",
            series_instance_uid=derived_uid("heatmap-series", str(source.StudyInstanceUID), weights_sha256),
            series_number=SERIES_NUMBER,
            sop_instance_uid=derived_uid("heatmap", str(source.SOPInstanceUID), finding, weights_sha256),
            instance_number=number,
            manufacturer="chestxr",
            # the overlay keeps the image's orientation; L\F (a PA chest as displayed) when it has none
            patient_orientation=(orientation[0], orientation[1]) if len(orientation) >= 2 else ("L", "F"),
        )
    sc.SeriesDescription = SERIES_DESCRIPTION
    sc.ImageComments = text(
        f"{LABEL}. Grad-CAM map for {finding}: shows where the model looked, not a finding.", limit=10240
    )
    sc.DerivationDescription = text(f"{LABEL}: chestxr {__version__} Grad-CAM overlay ({finding})", limit=1024)
    sc.BurnedInAnnotation = "YES"
    sc.ImageType = ["DERIVED", "SECONDARY"]
    sc.SoftwareVersions = f"chestxr {__version__}"
    return set_character_set(sc)  # UTF-8 when the finding or the patient name is not ASCII
