"""M&Ms-1 (Multi-Centre, Multi-Vendor & Multi-Disease Cardiac Segmentation Challenge).

Layout, found anywhere below `root` (so both a flat folder of patients and the release
root with ``Training/Labeled/``, ``Training/Unlabeled/``, ``Validation/``, ``Testing/``
work)::

    <code>/<code>_sa.nii.gz      4D short-axis cine (x, y, z, t)
    <code>/<code>_sa_gt.nii.gz   4D labels, labelled at ED and ES only: 1 LV, 2 MYO, 3 RV

Metadata CSV (the release's ``*_M&Ms_Dataset_information_diagnosis_opendataset.csv``):
``External code, VendorName, Vendor, Centre, ED, ES, Age, Pathology, Sex, Height,
Weight``; ED and ES are 0-based frame indices, Sex is M/F, Height (cm) and Weight (kg)
may be empty or 0, "not measured" (BMI None then; a 0 is noted in ``extra["bmi_undefined"]``). Column names match
ignoring case, spaces, underscores, hyphens and a unit in the assumed unit (``Height (cm)``,
``Weight [kg]``; `base.column_key`), ``Gender`` for ``Sex``; a column given twice whose copies
disagree is refused (`refuse_conflicting_columns`); an
unnamed index column is ignored. ``External code``, ``ED``, ``ES`` and ``Pathology`` are
required columns; Age, Sex, Height, Weight, Vendor, VendorName and Centre are optional
(None when absent).

Codes and folder names are paired in Unicode NFC (`normalise_id`): an accented code stored
decomposed by macOS is the same patient, and two folders that differ only so are one
patient's two folders (the first used, the other ``duplicate_id``).

Pathology -> diagnosis follows `cardio_assets.cohort.readers.diagnosis.MMS_DIAGNOSIS_DEFAULT`
(NOR healthy, DCM hf, the rest left out), overridable with `diagnosis_map`.
"""

from __future__ import annotations

from pathlib import Path

from cardio_assets.cohort.labels import IDENTITY_MAP
from cardio_assets.cohort.readers.base import (
    MaskRef,
    MetadataFormatError,
    PatientEntry,
    QuarantineRow,
    ScanResult,
    SourceMissingError,
    archive_stem,
    bmi_from_height_weight,
    bmi_note,
    code_text,
    column_key,
    distinct_folders,
    duplicate_folder_row,
    find_nifti,
    find_nifti_or_quarantine,
    is_blank,
    metadata_ref,
    missing_nifti,
    normalise_id,
    pair_rows_with_folders,
    parse_frame,
    parse_measure,
    parse_number,
    parse_or_quarantine,
    parse_sex,
    quarantine_bad_rows,
    require_dir,
    require_file,
    stand_in_note,
    table_rows_by_id,
    unreadable_below_rows,
    unreadable_folder_row,
    walk_folders,
)
from cardio_assets.cohort.readers.diagnosis import MMS_DIAGNOSIS_DEFAULT, map_diagnosis, resolve_diagnosis_map
from cardio_assets.cohort.readers.ukbb import read_metadata_table, refuse_conflicting_columns

SOURCE = "mms"
# canonical name -> accepted spellings (compared as `column_key`: lower case, spaces, underscores
# and hyphens removed, a unit such as "(cm)" dropped)
_COLUMNS = {
    "code": ("externalcode", "code", "subjectcode"),
    "vendor_name": ("vendorname",),
    "vendor": ("vendor",),
    "centre": ("centre", "center"),
    "ed": ("ed",),
    "es": ("es",),
    "age": ("age",),
    "pathology": ("pathology",),
    "sex": ("sex", "gender"),
    "height": ("height",),
    "weight": ("weight",),
}
_REQUIRED = ("code", "ed", "es", "pathology")


def _detect_columns(columns: list[str], path: Path) -> dict[str, str | None]:
    # "Height (cm)" is Height: unmatched, an optional column was silently blank for every
    # patient (no BMI). Of names sharing a key the first is used; `scan_mms` then refuses
    # copies that disagree (`refuse_conflicting_columns`).
    by_norm: dict[str, str] = {}
    for c in columns:
        by_norm.setdefault(column_key(c), c)
    found = {
        key: next((by_norm[a] for a in aliases if a in by_norm), None)
        for key, aliases in _COLUMNS.items()
    }
    missing = [k for k in _REQUIRED if found[k] is None]
    if missing:
        names = {"code": "External code", "ed": "ED", "es": "ES", "pathology": "Pathology"}
        raise MetadataFormatError(
            f"M&Ms metadata table {path} lacks the column(s) "
            f"{', '.join(names[k] for k in missing)}; its columns are {list(columns)}"
        )
    return found


def _patient_folders(root: Path, codes: set[str], unreadable: list[Path],
                     stand_ins: dict[str, Path] | None = None) -> dict[str, list[Path]]:
    """Folders below `root` named like a patient: holding ``<name>_sa*.nii*`` or named as a
    metadata code (`codes` in NFC), by id: the name in NFC (`normalise_id`), so two folders
    differing only in normalisation are one patient's two folders. Walked once, in sorted
    order, hidden folders and files and ``__MACOSX`` skipped (`is_ignored_entry`). Folders
    that could not be listed are appended to `unreadable`; one named as a code is that
    patient's folder (reported unreadable for the patient, not as absent). Files named as a code
    (``B2``, ``B2.zip``, or a link to a folder that is gone) go to `stand_ins` by id: the row's
    patient then has a file where its folder belongs, which its ``no_images`` row names."""
    found: dict[str, list[Path]] = {}
    for dirpath, _, filenames in walk_folders(root, unreadable):
        folder = Path(dirpath)
        if stand_ins is not None:
            for f in filenames:
                if normalise_id(archive_stem(f)) in codes:
                    stand_ins.setdefault(normalise_id(archive_stem(f)), folder / f)
        if folder == root:
            continue
        name = normalise_id(folder.name)
        prefix = f"{name}_sa"
        files = [normalise_id(f) for f in filenames]
        # the extension in any case: `find_nifti` reads ``<code>_sa.NII.GZ`` too
        if name in codes or any(f.startswith(prefix) and ".nii" in f.lower() for f in files):
            found.setdefault(name, []).append(folder)
    for folder in unreadable:  # os.walk does not enter these: a code's folder is known by its name
        if normalise_id(folder.name) in codes and folder != root:
            found.setdefault(normalise_id(folder.name), []).append(folder)
    return found


def _parse_row(record: dict, mapping: dict) -> dict:
    """Attributes of one row, `record` keyed by canonical column key (absent column: no key);
    ValueError names the first unparsable value."""
    ed = parse_frame(record.get("ed"), "ED frame")
    es = parse_frame(record.get("es"), "ES frame")
    if ed is None or es is None:  # say which: the row's other index is there to be seen
        blank = " and ".join(name for name, value in (("ED", ed), ("ES", es)) if value is None)
        raise ValueError(f"the {blank} frame {'index is' if ' and ' not in blank else 'indices are'} blank "
                         f"(ED and ES frame indices are required)")
    if ed == es:
        raise ValueError(f"ED and ES are the same frame ({ed})")
    sex = parse_sex(record.get("sex"), "Sex")
    age = parse_number(record.get("age"), "Age")
    height = parse_measure(record.get("height"), "Height")
    weight = parse_measure(record.get("weight"), "Weight")
    pathology = record.get("pathology")
    pathology = None if is_blank(pathology) else str(pathology).strip()
    diagnosis, excluded = map_diagnosis(pathology, mapping)

    def text(key):
        value = record.get(key)
        return None if is_blank(value) else str(value).strip()

    extra = {
        "vendor": _vendor_letter(text("vendor")),
        "vendor_name": text("vendor_name"),
        "centre": code_text(record.get("centre")),
        "pathology": pathology,
        "height_cm": height,
        "weight_kg": weight,
    }
    if excluded:
        extra["excluded_reason"] = excluded
    if note := bmi_note(height, weight):
        extra["bmi_undefined"] = note
    # the vendor letter (A-D) is what leave-one-vendor-out names; its name where the letter is blank
    return dict(ed_frame=ed, es_frame=es, sex=sex, age=age,
                bmi=bmi_from_height_weight(height, weight), diagnosis=diagnosis,
                vendor=extra["vendor"] or extra["vendor_name"], site=extra["centre"], extra=extra)


def _vendor_letter(vendor: str | None) -> str | None:
    """The Vendor cell, a one-letter code (A-D) in upper case: a letter typed in lower case ("a")
    was a fifth vendor beside "A", so a hold-out of vendor A trained on those patients."""
    return vendor.upper() if vendor is not None and len(vendor) == 1 and vendor.isalpha() else vendor


def _first_folders(root: Path, codes: set[str], quarantine: list[QuarantineRow],
                   stand_ins: dict[str, Path] | None = None) -> dict[str, Path]:
    """The folder of each patient below `root`; a patient's later folders are quarantined, and
    so are folders that could not be listed (`unreadable_below_rows`). Files standing where a
    code's folder belongs go to `stand_ins` (`_patient_folders`)."""
    unreadable: list[Path] = []
    found = _patient_folders(root, codes, unreadable, stand_ins)
    if not found:
        unseen = f" (could not read {', '.join(map(str, sorted(set(unreadable))))})" if unreadable else ""
        raise SourceMissingError(
            f"M&Ms: looked below {root.resolve()} for patient folders <code>/<code>_sa.nii.gz "
            f"and found none{unseen}"
        )
    quarantine.extend(unreadable_below_rows(unreadable, [f for paths in found.values() for f in paths], SOURCE))
    folders: dict[str, Path] = {}
    for pid, paths in found.items():
        folders[pid], *others = distinct_folders(pid, paths)
        quarantine.extend(duplicate_folder_row(pid, SOURCE, other, folders[pid]) for other in others)
    return folders


def _missing_folder(root: Path, pid: str, stand_ins: dict[str, Path]) -> tuple[str, str]:
    """(the path to report, where the folder was looked for) for a row without a folder; a file,
    archive or dangling link of its name found below `root` is named (`stand_in_note`)."""
    where = f"{pid}/{pid}_sa.nii.gz anywhere below {root}"
    stand_in = stand_ins.get(pid)
    return (str(root), where) if stand_in is None else (str(stand_in), f"{where}{stand_in_note(stand_in)}")


def _find_files(folder: Path, pid: str, problems: list[QuarantineRow]) -> tuple[Path | None, Path | None]:
    """The cine and the 4D label file (which holds both ED and ES) of a patient folder."""
    image = find_nifti_or_quarantine(folder, f"{pid}_sa", pid, SOURCE, "missing_image", "cine", problems)
    labels = find_nifti(folder, f"{pid}_sa_gt")
    if labels is None:
        expected, why = missing_nifti(folder, f"{pid}_sa_gt")
        for reason, phase in (("missing_ed_mask", "ED"), ("missing_es_mask", "ES")):
            problems.append(QuarantineRow(
                pid, SOURCE, str(expected), reason,
                f"patient {pid}: the label file {expected}, which holds the {phase} "
                f"segmentation, {why}",
            ))
    return image, labels


def _entry(pid: str, root: Path, folder: Path, image: Path, labels: Path, attrs: dict, ref: str) -> PatientEntry:
    gt = str(labels.absolute())
    try:
        split = str(folder.parent.relative_to(root))
    except ValueError:
        split = ""
    extra = attrs["extra"]
    extra["release_folder"] = "" if split == "." else split
    return PatientEntry(
        patient_id=pid,
        source=SOURCE,
        image_path=str(image.absolute()),
        ed_mask=MaskRef(gt, frame=attrs["ed_frame"]),
        es_mask=MaskRef(gt, frame=attrs["es_frame"]),
        label_map=dict(IDENTITY_MAP),
        ed_frame=attrs["ed_frame"],
        es_frame=attrs["es_frame"],
        sex=attrs["sex"],
        age=attrs["age"],
        bmi=attrs["bmi"],
        diagnosis=attrs["diagnosis"],
        vendor=attrs["vendor"],
        site=attrs["site"],
        extra=extra,
        metadata_ref=ref,
    )


def scan_mms(
    root: str | Path, metadata_csv: str | Path, *, diagnosis_map: dict | None = None
) -> ScanResult:
    """Entries and quarantine rows of an M&Ms-1 cohort (see module docstring).

    `diagnosis_map` (pathology -> "hf" | "healthy" | None) is merged over the defaults.
    Raises SourceMissingError when `root` or the table is missing or `root` holds no
    patient folders; MetadataFormatError when the table lacks a required column.
    """
    mapping = resolve_diagnosis_map(MMS_DIAGNOSIS_DEFAULT, diagnosis_map)
    root = require_dir(root, "M&Ms image folder (<code>/<code>_sa.nii.gz)")
    csv = require_file(metadata_csv, "M&Ms metadata table")
    table = read_metadata_table(csv)
    cols = _detect_columns(list(table.columns), csv)
    refuse_conflicting_columns(table, cols.values(), csv)
    table_name = str(csv)

    quarantine: list[QuarantineRow] = []
    unsplit = quarantine_bad_rows(table, list(table.columns), cols["code"], SOURCE, table_name, quarantine)
    # compare duplicates on the values, not on the (ignored) index column
    kept, fully_duplicated = table_rows_by_id(
        table.to_dict("records"), cols["code"], "External code", SOURCE, table_name, quarantine,
        values=lambda record: {k: record[c] for k, c in cols.items() if c is not None}, lines=table.attrs["lines"],
    )
    skip = fully_duplicated | unsplit
    stand_ins: dict[str, Path] = {}
    folders = _first_folders(root, set(kept) | skip, quarantine, stand_ins)

    entries: list[PatientEntry] = []
    for pid, line, record, folder in pair_rows_with_folders(
        kept, folders, skip, SOURCE, table_name,
        lambda pid: _missing_folder(root, pid, stand_ins), quarantine,
    ):
        cannot_read = unreadable_folder_row(pid, SOURCE, folder)
        if cannot_read:
            quarantine.append(cannot_read)
            continue
        problems: list[QuarantineRow] = []
        attrs = parse_or_quarantine(lambda r: _parse_row(r, mapping), record, pid, line, SOURCE, table_name, problems)
        image, labels = _find_files(folder, pid, problems)
        if problems:
            quarantine.extend(problems)
            continue
        entries.append(_entry(pid, root, folder, image, labels, attrs, metadata_ref(table_name, line)))
    return ScanResult(entries, quarantine)
