"""Synthetic DICOM/PNG writers for the image, transform and cache tests (tiny images, in tmp_path)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
IDENTIFIERS = {
    "PatientName": "Doe^Jane",
    "PatientID": "PID-12345",
    "PatientBirthDate": "19700101",
    "AccessionNumber": "ACC-999",
    "InstitutionName": "Example Hospital",
}


def make_dataset(
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: Optional[int] = None,
    modality: str = "CR",
    body_part: Optional[str] = "CHEST",
    view: Optional[str] = "PA",
    slope: Optional[float] = None,
    intercept: Optional[float] = None,
    window: Optional[tuple[float, float]] = None,
    voi_function: Optional[str] = None,
    voi_lut: Optional[tuple[Sequence[int], Sequence[int]]] = None,
    frames: int = 1,
    with_pixels: bool = True,
) -> Dataset:
    """A CR dataset holding ``pixels`` ((rows, cols), (frames, rows, cols) or (rows, cols, 3) RGB).

    voi_lut: (LUTDescriptor [n, first, bits], LUTData). Carries fake patient identifiers on purpose.
    """
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CR_STORAGE
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CR_STORAGE
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    for key, value in IDENTIFIERS.items():
        setattr(ds, key, value)
    ds.Modality = modality
    if body_part is not None:
        ds.BodyPartExamined = body_part
    if view is not None:
        ds.ViewPosition = view
    rgb = pixels.ndim == 3 and pixels.shape[-1] == 3 and frames == 1
    ds.Rows, ds.Columns = pixels.shape[-3:-1] if rgb else pixels.shape[-2:]
    ds.SamplesPerPixel = 3 if rgb else 1
    if rgb:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    itemsize = pixels.dtype.itemsize
    ds.BitsAllocated = 8 * itemsize
    ds.BitsStored = bits_stored or 8 * itemsize
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if np.issubdtype(pixels.dtype, np.signedinteger) else 0
    if frames > 1:
        ds.NumberOfFrames = frames
    if slope is not None or intercept is not None:
        ds.RescaleSlope = slope if slope is not None else 1
        ds.RescaleIntercept = intercept if intercept is not None else 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if voi_function is not None:
        ds.VOILUTFunction = voi_function
    if voi_lut is not None:
        item = Dataset()
        item.add_new(0x00283002, "US", list(voi_lut[0]))  # LUTDescriptor
        item.add_new(0x00283006, "US", list(voi_lut[1]))  # LUTData
        ds.VOILUTSequence = [item]
    if with_pixels:
        ds.PixelData = np.ascontiguousarray(pixels).astype(pixels.dtype.newbyteorder("<")).tobytes()
    return ds


def write_dicom(path: Path, pixels: np.ndarray, *, preamble: bool = True, **kwargs: Any) -> Path:
    """Write ``make_dataset(pixels, **kwargs)`` to ``path`` (optionally without preamble/'DICM')."""
    ds = make_dataset(pixels, **kwargs)
    if preamble:
        ds.save_as(path, enforce_file_format=True)
    else:
        ds.preamble = None
        ds.save_as(path, enforce_file_format=False)
    return Path(path)


def write_raw_dataset(path: Path, pixels: np.ndarray, **kwargs: Any) -> Path:
    """A bare implicit-VR dataset: no preamble, no 'DICM', no file meta (starts with group 0x0008)."""
    ds = make_dataset(pixels, **kwargs)
    del ds.file_meta
    ds.preamble = None
    ds.save_as(path, implicit_vr=True, little_endian=True, enforce_file_format=False)
    return Path(path)


def block_image(dtype: Any = np.uint16, *, low: int = 100, high: int = 1000, shape=(32, 48)) -> np.ndarray:
    """Background ``low`` with a bright ``high`` 8 x 8 block in the top-left corner, plus a ramp row."""
    img = np.full(shape, low, dtype=dtype)
    img[:8, :8] = high
    img[-1, :] = np.linspace(low, high, shape[1]).astype(dtype)
    return img


__all__ = ["make_dataset", "write_dicom", "write_raw_dataset", "block_image", "IDENTIFIERS", "ImplicitVRLittleEndian"]
