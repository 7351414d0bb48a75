"""Floor 2, one radiograph file -> a model input (imports chestxr.core): DICOM (modality/VOI LUT,
MONOCHROME1, compressed transfer syntaxes) and PNG/JPEG/TIFF/BMP readers recognised by content, header
checks, resize/normalisation transforms and augmentation, the decode cache, the Dataset and
:class:`LoaderOptions`, and the inputs of a prediction without a manifest (files, folders, study keys)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chestxr.core import lazy_face

if TYPE_CHECKING:
    from chestxr.imaging._acquisition import (
        ACQUISITION_FIELDS,
        acquisition_fields,
        age_band,
        kvp_band,
        pixel_spacing_band,
        sex_code,
    )
    from chestxr.imaging._cache import CACHE_VERSION, ImageCache, build_image_loader
    from chestxr.imaging._dataset import (
        IN_PROCESS,
        BadImagePolicy,
        ChestXRayDataset,
        LoaderOptions,
        build_dataset,
        collate,
        seed_worker,
    )
    from chestxr.imaging._decoding import ACCEPTED_FORMATS, META_KEYS, MIN_IMAGE_SIDE
    from chestxr.imaging._dicom_pixels import check_dicom_header
    from chestxr.imaging._inputs import IMAGE_SUFFIXES, study_keys_for_files, walk_inputs
    from chestxr.imaging._read_options import ReadOptions
    from chestxr.imaging._readers import ImageHeader, read_image, read_image_header, read_image_with_meta, sniff_format
    from chestxr.imaging._transforms import (
        IMAGENET_MEAN,
        IMAGENET_STD,
        XRV_SCALE,
        build_augmentation,
        build_transform,
        resize_square,
        resize_to,
    )

__all__ = [
    "ACCEPTED_FORMATS",
    "ACQUISITION_FIELDS",
    "CACHE_VERSION",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_SUFFIXES",
    "IN_PROCESS",
    "META_KEYS",
    "MIN_IMAGE_SIDE",
    "XRV_SCALE",
    "BadImagePolicy",
    "ChestXRayDataset",
    "ImageHeader",
    "ImageCache",
    "LoaderOptions",
    "ReadOptions",
    "acquisition_fields",
    "age_band",
    "build_augmentation",
    "build_dataset",
    "build_image_loader",
    "build_transform",
    "check_dicom_header",
    "collate",
    "kvp_band",
    "pixel_spacing_band",
    "read_image",
    "read_image_header",
    "read_image_with_meta",
    "resize_square",
    "resize_to",
    "seed_worker",
    "sex_code",
    "sniff_format",
    "study_keys_for_files",
    "walk_inputs",
]

__getattr__, __dir__ = lazy_face(__name__, __file__, __all__)
