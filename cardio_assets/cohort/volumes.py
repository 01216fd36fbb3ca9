"""Reading cine volumes and label maps from NIfTI, in their stored dtype.

Volumes are read once, whole, in their on-disk integer type: gzip streams cannot seek,
so any frame costs decompressing the file up to it, and ED-1 is the last frame. Never
as float64 (nibabel's `get_fdata`): that would be four times the memory of int16.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib

import nibabel as nib
import numpy as np

from cardio_assets.cohort.labels import LabelError, to_canonical
from cardio_assets.cohort.readers.base import MaskRef


class VolumeError(ValueError):
    """A file cannot be read or does not hold what it should; the message names the file."""


class AffineError(VolumeError):
    """A file's affine (voxel-to-world transform) holds NaN or inf; the message names the file."""


# Float label maps (resampled, or stored with a scale factor) carry rounding noise such as
# 1.0000001; a value this close to a whole number is that label, anything further is not one.
LABEL_ROUNDING_TOLERANCE = 1e-3


def load_cine(path: str) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """4D cine (x, y, z, t) in its stored dtype, its affine and voxel sizes.

    Trailing size-1 axes past the 4th (x, y, z, t, 1) are dropped (`_squeeze_trailing`)."""
    img = _open(path)
    if len(_trailing_squeezed_shape(img.shape, 4)) != 4:  # checked before reading the voxels
        raise VolumeError(f"{path}: expected a 4D cine (x, y, z, t), found shape {img.shape}")
    _check_voxel_sizes(img, path)
    _check_affine(img, path)
    data = _squeeze_trailing(_read(img, path), 4)
    return data, img.affine, tuple(float(z) for z in img.header.get_zooms()[:3])


def _trailing_squeezed_shape(shape: tuple[int, ...], ndim: int) -> tuple[int, ...]:
    """`shape` without its trailing size-1 axes beyond the first `ndim` axes."""
    shape = tuple(shape)
    while len(shape) > ndim and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def _squeeze_trailing(data: np.ndarray, ndim: int) -> np.ndarray:
    """`data` without trailing size-1 axes beyond the first `ndim`.

    Some converters and toolkits (SimpleITK, DICOM-to-NIfTI tools, vector-image writers) save a
    3D mask as (x, y, z, 1, 1) or a cine as (x, y, z, t, 1): the same voxels, an extra empty
    axis. Only trailing size-1 axes go; any other extra axis (x, y, z, t, 2: two channels, or
    a size-1 axis before a larger one) is left for the caller to reject, as which voxels
    are meant is unknowable."""
    return data.reshape(_trailing_squeezed_shape(data.shape, ndim))


def _check_voxel_sizes(img: nib.Nifti1Image, path: str) -> None:
    """VolumeError when the header's voxel sizes (pixdim 1-3) are zero or not finite.

    nibabel silently reads a zero as 1 mm, so the stored header is read again unchecked:
    the recorded spacing would otherwise be made up. A negative size is read as its
    absolute value, as nibabel and other NIfTI readers do."""
    try:
        with nib.openers.ImageOpener(path) as handle:
            stored = type(img.header).from_fileobj(handle, check=False)
    except Exception as exc:  # the same file just opened; any failure is a broken file
        raise VolumeError(f"{path}: unreadable NIfTI header ({type(exc).__name__}: {exc})") from None
    sizes = [float(v) for v in stored["pixdim"][1:4]]
    if not all(math.isfinite(v) and v != 0 for v in sizes):
        shown = ", ".join(f"{v:g}" for v in sizes)
        raise VolumeError(f"{path}: header voxel sizes (pixdim 1-3) are {shown}; zero or non-finite "
                          f"sizes leave the spacing unknown")


def _check_affine(img: nib.Nifti1Image, path: str) -> None:
    """AffineError when the affine nibabel reads (from the sform, else the qform, else the voxel
    sizes) holds NaN or inf, naming which header fields it came from.

    Such a file loads without complaint, but then compares unequal to every other affine, NaN
    included: the patient was quarantined as an orientation mismatch of its mask, naming the
    mask even when the cine was the broken file."""
    if np.isfinite(img.affine).all():
        return
    source = _affine_source(img.header)
    raise AffineError(f"{path}: its affine (the voxel-to-world transform, from the header's {source}) is not "
                      f"finite (it holds NaN or inf): where its voxels lie and how it is oriented are unknown")


def _affine_source(header) -> str:
    """Which header fields nibabel's affine comes from: the sform, else the qform, else the voxel
    sizes alone (no orientation stored: a converter that wrote neither)."""
    return ("sform (srow_x, srow_y, srow_z)" if header["sform_code"] > 0 else
            "qform (quatern_b/c/d, qoffset_x/y/z)" if header["qform_code"] > 0 else
            "voxel sizes (pixdim) alone, as it stores neither sform nor qform")


def describe_affine(path: str, affine: np.ndarray) -> str:
    """`affine` in words, for a message comparing two files: its axis directions, voxel sizes,
    origin, and the header fields of `path` it came from (read again: only asked for a patient
    already being quarantined)."""
    sizes = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    try:
        source = _affine_source(nib.load(path).header)
    except (OSError, EOFError, ValueError, zlib.error, nib.filebasedimages.ImageFileError):
        # the same file was just read: one changed or removed under the run still gets its message
        source = "header (which could not be read again to say which fields)"
    return (f"axes {''.join(nib.aff2axcodes(affine))}, voxel sizes {', '.join(f'{v:.4g}' for v in sizes)} mm, "
            f"origin ({', '.join(f'{v:.4g}' for v in np.asarray(affine)[:3, 3])}) from the {source}")


def load_mask(ref: MaskRef, label_map: dict[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Canonical uint8 label map (x, y, z) of one phase and its affine.

    Trailing size-1 axes past the expected ones are dropped (`_squeeze_trailing`): a 3D mask
    stored as (x, y, z, 1) or (x, y, z, 1, 1), a 4D label file as (x, y, z, t, 1)."""
    img = _open(ref.path)
    _check_affine(img, ref.path)
    data = _read(img, ref.path)
    if ref.frame is not None:
        data = _squeeze_trailing(data, 4)
        if data.ndim != 4:
            raise VolumeError(f"{ref.path}: expected a 4D label file to take frame {ref.frame} from, found shape {data.shape}")
        if not 0 <= ref.frame < data.shape[3]:
            raise VolumeError(f"{ref.path}: frame {ref.frame} outside 0..{data.shape[3] - 1}")
        data = data[..., ref.frame]
    else:
        data = _squeeze_trailing(data, 3)
    if data.ndim != 3:
        raise VolumeError(f"{ref.path}: expected a 3D label map, found shape {data.shape}")
    if np.issubdtype(data.dtype, np.floating):
        if not np.all(np.isfinite(data)):
            raise VolumeError(f"{ref.path}: label map holds NaN or inf")
        rounded = np.rint(data)
        off = np.abs(data - rounded) > LABEL_ROUNDING_TOLERANCE
        if off.any():
            examples = sorted(set(data[off].tolist()))[:5]
            raise LabelError(f"non-integer labels such as {examples} ({int(off.sum())} voxels)")
        data = rounded  # kept as floats: to_canonical checks them before any integer cast
    try:
        return to_canonical(data, label_map), img.affine
    except LabelError as exc:
        raise LabelError(f"{exc}{_scaling_note(img)}") from None


def _scaling_note(img: nib.Nifti1Image) -> str:
    """Why labels read out of their set when the header scales the stored values (scl_slope,
    scl_inter, which nibabel applies): a writer that set them turns stored 1, 2, 3 into other
    numbers, and the message would otherwise show values that are nowhere in the file. ""
    when the header does not scale."""
    slope, inter = img.dataobj.slope, img.dataobj.inter
    if slope == 1 and inter == 0:
        return ""
    return (f" (read after the header's scaling, scl_slope {slope:g} and scl_inter {inter:g}: a label file should "
            f"store its labels unscaled, slope 1 and intercept 0)")


def labelled_frames(path: str) -> list[int]:
    """The frames of a 4D label file that hold any label (M&Ms labels ED and ES only); [] when
    the file is not 4D. Read again, whole: only asked for a patient already being quarantined."""
    data = _squeeze_trailing(_read(_open(path), path), 4)
    return np.flatnonzero(data.any(axis=(0, 1, 2))).tolist() if data.ndim == 4 else []


def _open(path: str) -> nib.Nifti1Image:
    try:
        with open(path, "rb") as handle:  # nibabel's own message hides why a file cannot be opened
            head = handle.read(348)
    except FileNotFoundError:
        raise VolumeError(f"{path}: file not found") from None
    except OSError as exc:  # no read permission, a folder of that name...
        raise VolumeError(f"{path}: cannot be opened ({exc.strerror or type(exc).__name__})") from None
    try:
        img = nib.load(path)
    except Exception as exc:  # nibabel raises many types for bad headers
        raise VolumeError(f"{path}: unreadable NIfTI header ({type(exc).__name__}: {exc}){_likely_cause(path, head)}") from None
    dtype = img.get_data_dtype()
    if dtype.fields is not None or dtype.kind not in "biuf":
        # RGB or complex voxels: not a magnitude image or a label map (and RGB cannot be
        # compared with a threshold, which would stop the whole run)
        raise VolumeError(f"{path}: voxels are of type {dtype}, not real numbers")
    if 0 in img.shape:
        # a conversion that wrote no slices or frames: nibabel reads such a file as a flat array
        # of no voxels, whose missing axes stopped the whole run where the frames were counted
        raise VolumeError(f"{path}: its header gives the dimensions {tuple(img.shape)}, with an axis of length 0: "
                          f"the file holds no voxels (a conversion or export that wrote no slices or frames?)")
    _check_dimensions(img, path)
    return img


# Deflate, gzip's compression, cannot shrink data more than about 1032 to 1 (a run of one byte):
# a .nii.gz smaller than its voxels / 1032 cannot hold them, whatever they are.
GZIP_MAX_RATIO = 1032


def _check_dimensions(img: nib.Nifti1Image, path: str) -> None:
    """VolumeError when the header's dimensions are negative, or ask for more voxel bytes than the
    file can hold (a damaged header).

    Checked before reading: nibabel allocates the whole array a gzipped file's header asks for
    before reading any of it, so a header saying (20000, 20000, 20000, 8) tried to take 128 TB
    (a MemoryError that named no cause), and a claim of a few GB was taken in full before the
    read found the file short. Only .nii and .nii.gz are bounded: other compressions have no
    such ratio."""
    shape = tuple(int(n) for n in img.shape)
    if min(shape) < 0:  # nibabel opens such a header; the read then failed as "negative count"
        raise VolumeError(f"{path}: its header gives the dimensions {shape}, with an axis of negative length: "
                          f"the header is damaged")
    needed = math.prod(shape) * img.get_data_dtype().itemsize
    size = os.path.getsize(path)
    name = str(path).lower()
    if name.endswith(".nii"):
        room, how = size - int(img.header.get_data_offset()), ""
    elif name.endswith(".nii.gz"):
        room, how = size * GZIP_MAX_RATIO, f", even at gzip's greatest compression ({GZIP_MAX_RATIO}:1),"
    else:
        return
    if needed > room:
        raise VolumeError(f"{path}: its header gives the dimensions {shape} of {img.get_data_dtype()} voxels, "
                          f"{_in_bytes(needed)} of voxel data, but the file is {size} bytes, which{how} cannot hold "
                          f"them: a damaged header, or a file cut short?")


def _in_bytes(n: int) -> str:
    """`n` bytes in decimal units ("128 TB"), for a message."""
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.3g} {unit}"
        n /= 1000


def _has_nifti_magic(header: bytes) -> bool:
    """Whether `header` (a file's first bytes) holds NIfTI-1's magic (``n+1``/``ni1`` at byte 344)
    or NIfTI-2's (``n+2``/``ni2`` at byte 4)."""
    return header[344:347] in (b"n+1", b"ni1") or header[4:7] in (b"n+2", b"ni2")


def _likely_cause(path: str, head: bytes) -> str:
    """What nibabel's message leaves out about a file it could not open: an uncompressed NIfTI
    named ``.nii.gz`` (its magic, not gzip's), a gzip stream cut short or damaged before its end
    (a copy interrupted), which nibabel can report as an unknown file type, a gzip-compressed
    NIfTI named ``.nii`` (nibabel goes by the name), or a gzip holding something else. Only run on
    a file that failed to open, so decompressing it whole costs nothing on good files."""
    gzipped = str(path).lower().endswith(".gz")
    if not head.startswith(b"\x1f\x8b"):
        if gzipped and _has_nifti_magic(head):
            return "; the file is an uncompressed NIfTI named .nii.gz: rename it to .nii or gzip it"
        return ""
    try:
        with gzip.open(path, "rb") as stream:
            inner = stream.read(540)  # the larger, NIfTI-2, header
            while stream.read(1 << 20):
                pass
    except (OSError, EOFError, zlib.error) as exc:
        return f"; its gzip stream is cut short or damaged ({type(exc).__name__}: {exc}): a truncated copy?"
    if not _has_nifti_magic(inner):
        return "; it is a gzip file, but what it holds is not a NIfTI image (no NIfTI magic in its header)"
    if not gzipped:
        return "; the file is gzip-compressed but named .nii: rename it to .nii.gz"
    return ""


def _read(img: nib.Nifti1Image, path: str) -> np.ndarray:
    try:
        # asanyarray on the proxy applies scl_slope/inter only when set, keeping int16 otherwise
        return np.asanyarray(img.dataobj)
    except Exception as exc:  # truncated gzip -> EOFError, zlib.error, OSError, ValueError
        raise VolumeError(f"{path}: unreadable or truncated voxel data ({type(exc).__name__}: {exc})") from None
