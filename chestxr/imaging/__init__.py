"""Layer 2: one radiograph file -> a model input. DICOM and raster readers, transforms, the decode cache, the Dataset. Imports chestxr.core and chestxr.data."""
