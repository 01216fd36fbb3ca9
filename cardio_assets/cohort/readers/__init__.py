"""Readers for the cohort layouts the pipeline understands.

Each reader inspects a folder layout and its metadata (never the voxels) and returns a
`ScanResult`: `PatientEntry`s pointing at files, plus `QuarantineRow`s for everything it
could not use. Quarantine reason codes:

- ``missing_image``: no cine file for the patient;
- ``missing_ed_mask`` / ``missing_es_mask``: no label file for that phase;
- ``missing_metadata``: a patient folder with no metadata row (or no Info.cfg), or a
  metadata row whose values are present but unparsable (or without an id, or with more
  fields than the header);
- ``duplicate_id``: an id twice in the metadata, ids differing only in case counting as
  one (identical copies: the first is kept; conflicting copies: all quarantined) or two
  different patient folders of one id (first kept; two paths that are one folder, through a
  symbolic link, are read once: `base.distinct_folders`). Ids are compared in Unicode NFC, so an accented
  id written as one code point in a table and decomposed (NFD, as macOS stores names) in a
  folder name is one patient;
- ``no_images``: a metadata row whose patient folder is absent;
- ``bad_metadata``: a malformed ACDC Info.cfg;
- ``unreadable_folder``: a patient folder whose files cannot be looked at (no read or search
  permission), or a folder below the root that cannot be listed (no patient id: whatever
  patients it holds are unseen, so the run says where).

Opening the files adds (`cardio_assets.cohort.validation`) ``undecodable_path``: a patient whose
image, mask or metadata path holds bytes that are not UTF-8 (a Windows zip unpacked on Linux),
which the cohort table cannot store, besides the volume and label problems listed there.

Every folder scan skips hidden entries (``.DS_Store``, ``._name`` AppleDouble files) and
``__MACOSX`` zip leftovers (`base.is_ignored_entry`), and follows symbolic links to folders
(a link back up the tree is not entered: `base.walk_folders`). Ids and column names are
compared without invisible format characters (zero-width spaces, `base.normalise_id`). A patient
folder holding nothing but its namesake (``patient002/patient002/``, a zip unpacked into a folder of
its own name) is read from inside (`base.unwrapped`); a file, archive or symbolic link to nowhere
where a patient folder belongs is named in the patient's row (`base.stand_in_note`), and so is a
file of the expected name in another format (``sa.mha``) or with a suffix added (``.nii.gz.part``). In metadata, a row repeating the header (two
exports concatenated) is skipped like an empty row, and zero bytes (a crashed write's padding) are
no text. A quarantine row writes names that are not UTF-8 on disk with ``\\xNN`` escapes.

Opening the volumes, checking voxels, labels, shapes and orientation, and finding ES is
done afterwards for every source by `cardio_assets.cohort.validation`. Each entry carries
`metadata_ref` ("table path:line", ACDC: its Info.cfg) so later rows name where its
attributes came from.
"""

from cardio_assets.cohort.readers.acdc import scan_acdc
from cardio_assets.cohort.readers.base import MetadataFormatError, SourceMissingError
from cardio_assets.cohort.readers.diagnosis import ACDC_DIAGNOSIS_DEFAULT, MMS_DIAGNOSIS_DEFAULT
from cardio_assets.cohort.readers.mms import scan_mms
from cardio_assets.cohort.readers.ukbb import scan_ukbb

SOURCES: dict[str, str] = {
    "phantom": "built-in synthetic cohort with known ground truth, in the UK Biobank layout "
               "(read by scan_ukbb with source='phantom')",
    "ukbb": "UK Biobank, ukbb_cardiac layout: <eid>/sa.nii.gz, seg_sa_ED/ES.nii.gz, and a "
            "CSV of fields 31 (sex), 21003 (age), 21001 (BMI), 41270 (ICD-10; I50* = HF)",
    "mms": "M&Ms-1: <code>/<code>_sa.nii.gz and _sa_gt.nii.gz (4D, labelled at ED/ES), and "
           "the release CSV (vendor, centre, 0-based ED/ES, age, sex, pathology, height, weight)",
    "acdc": "ACDC: patientNNN/ with _4d.nii.gz, _frameXX_gt.nii.gz and Info.cfg (1-based "
            "ED/ES, group, height, weight); no sex or age",
}

QUARANTINE_REASONS: tuple[str, ...] = (
    "missing_image",
    "missing_ed_mask",
    "missing_es_mask",
    "missing_metadata",
    "duplicate_id",
    "no_images",
    "bad_metadata",
    "unreadable_folder",
)

__all__ = [
    "ACDC_DIAGNOSIS_DEFAULT",
    "MMS_DIAGNOSIS_DEFAULT",
    "MetadataFormatError",
    "QUARANTINE_REASONS",
    "SOURCES",
    "SourceMissingError",
    "scan_acdc",
    "scan_mms",
    "scan_ukbb",
]
