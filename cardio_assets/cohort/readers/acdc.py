"""ACDC (Automated Cardiac Diagnosis Challenge, MICCAI 2017).

Layout, found anywhere below `root` (the release has ``training/`` and ``testing/``)::

    patientNNN/patientNNN_4d.nii.gz            4D short-axis cine (x, y, z, t)
    patientNNN/patientNNN_frameXX.nii.gz       3D image at frame XX (1-based)
    patientNNN/patientNNN_frameXX_gt.nii.gz    3D labels at frame XX: 1 RV, 2 MYO, 3 LV
    patientNNN/Info.cfg                        ``Key: value`` lines

Info.cfg keys: ED, ES (1-based frame numbers), Group, Height (cm), NbFrame, Weight (kg).
A Height or Weight that is blank or 0 ("not measured") leaves BMI None (a 0 is noted in
``extra["bmi_undefined"]``); a negative one, or two that give no finite BMI, is ``bad_metadata``.
ED and ES are required (a file without them, with a line that is not ``Key: value``, or
with a key given twice with different values, is ``bad_metadata``); a folder without Info.cfg is ``missing_metadata``. Frames become
0-based (``ed_frame = ED - 1``); the masks are the ``_gt`` files of frames ED and ES. NbFrame, where
given, must be the cine's frame count (validation quarantines another as ``frame_count_mismatch``).
ACDC records no sex and no age: they stay None, so the patient has no cell. Every patient was
scanned at one site (University Hospital of Dijon) on Siemens scanners (1.5 T Aera, 3 T Trio
Tim): vendor ``Siemens``, site ``Dijon``. Labels are
remapped with `ACDC_MAP`. Group -> diagnosis follows
`cardio_assets.cohort.readers.diagnosis.ACDC_DIAGNOSIS_DEFAULT`, overridable with `diagnosis_map`.

A file where a patient folder belongs (``patient002.zip``, an archive not unpacked, a file
named ``patient002``, or a link to a folder that is gone: storage moved or not mounted) is
quarantined as ``missing_image`` naming it.

The patient id is the folder name lower-cased and stripped (``Patient001`` and
``patient001 `` are patient001). A patient id found in two folders keeps the first (sorted
path order); later folders are quarantined as ``duplicate_id``, as are folders whose number
differs only in leading zeros from another's (``patient0001`` beside ``patient001``: the
three-digit one is used). Two paths that are one folder (a symbolic link to it) are read once
(`distinct_folders`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from cardio_assets.cohort.labels import ACDC_MAP
from cardio_assets.cohort.readers.base import (
    MaskRef,
    PatientEntry,
    QuarantineRow,
    ScanResult,
    SourceMissingError,
    archive_stem,
    bmi_from_height_weight,
    bmi_note,
    decode_text,
    distinct_folders,
    duplicate_folder_row,
    find_nifti,
    find_nifti_or_quarantine,
    is_blank,
    is_dangling_link,
    is_ignored_entry,
    metadata_ref,
    missing_nifti,
    parse_frame,
    parse_measure,
    require_dir,
    stand_in_note,
    unreadable_below_rows,
    unreadable_folder_row,
    walk_folders,
)
from cardio_assets.cohort.readers.diagnosis import ACDC_DIAGNOSIS_DEFAULT, map_diagnosis, resolve_diagnosis_map

SOURCE = "acdc"
ACDC_VENDOR, ACDC_SITE = "Siemens", "Dijon"
INFO_FILE = "Info.cfg"
# keys as the release writes them; a file with "ed:" or "NBFRAME:" (edited by hand or by a
# script) means the same keys
INFO_KEYS = {key.lower(): key for key in ("ED", "ES", "Group", "Height", "NbFrame", "Weight")}
# "Patient001" or "patient001 " (a renamed or badly copied folder) is still a patient: the
# id is the name lower-cased and stripped, so such a folder is read or reported, never skipped
PATIENT_DIR = re.compile(r"^\s*patient\d+\s*$", re.IGNORECASE)


def _patient_id(folder_name: str) -> str:
    return folder_name.strip().lower()


def _number(pid: str) -> int:
    """The patient number of an id: 1 for ``patient001``, ``patient0001`` and ``patient1``."""
    return int(pid[len("patient"):])


def _release_spelling_first(pid: str) -> tuple[int, bool, str]:
    """Ids by number, the release's three-digit spelling (``patient001``) first among those of one
    number, so that it is the folder kept."""
    return _number(pid), pid != f"patient{_number(pid):03d}", pid


def _same_number_row(pid: str, folder: Path, kept: Path) -> QuarantineRow:
    """The quarantine row of a folder whose number another patient's folder already has, but for
    leading zeros (``patient0001`` beside ``patient001``: a copy renamed by a script). Read as a
    patient of its own, one heart could sit in two splits, training and test."""
    return QuarantineRow(
        pid, SOURCE, str(folder), "duplicate_id",
        f"patient {pid}: the folder {folder} has the patient number of {kept} but for leading zeros, so it "
        f"is taken for the same patient; {kept} is used and this one is quarantined",
    )


def read_info_cfg(path: Path) -> dict[str, str]:
    """``Key: value`` lines as a dict; ValueError on a line of another shape, or on a key
    given twice with different values (an edited file: which one holds is unknowable).

    A byte-order mark, CRLF line ends, a DOS end-of-file mark (Ctrl-Z) at its end, UTF-16,
    Windows-1252 and Latin-1 text are read like plain UTF-8; the known keys are matched in any
    letter case ("ed: 1" is ED)."""
    try:
        text = decode_text(path.read_bytes())
    except (UnicodeDecodeError, OSError) as exc:
        raise ValueError(f"cannot read it as text ({exc})") from None
    # DOS's end-of-file mark, Ctrl-Z (0x1A), which old Windows tools (``copy /a``, some editors)
    # append to a text file: it is no line of the file, and made a whole patient bad_metadata
    text = text.rstrip().rstrip("\x1a")
    info: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        key, value = key.strip(), value.strip()
        key = INFO_KEYS.get(key.lower(), key)
        if not sep or not key:
            raise ValueError(f"line {number} {line.strip()!r} is not 'Key: value'")
        if key in info and info[key] != value:
            raise ValueError(f"gives {key} twice: {info[key]!r} on line {first_line[key]}, {value!r} on line {number}")
        info[key] = value
        first_line.setdefault(key, number)
    return info


def _parse_info(info: dict[str, str]) -> dict:
    """0-based frames, BMI and group from Info.cfg values; ValueError when malformed."""
    for key in ("ED", "ES"):
        if key not in info:
            raise ValueError(f"has no {key} line")
    ed = parse_frame(info["ED"], "ED")
    es = parse_frame(info["ES"], "ES")
    if ed is None or es is None or ed < 1 or es < 1:
        raise ValueError(f"ED {info['ED']!r} and ES {info['ES']!r} must be frame numbers >= 1")
    if ed == es:
        raise ValueError(f"ED and ES are the same frame ({ed})")
    nb_frames = parse_frame(info.get("NbFrame"), "NbFrame")
    if nb_frames is not None and max(ed, es) > nb_frames:
        raise ValueError(f"ED {ed} or ES {es} is beyond NbFrame {nb_frames}")
    height = parse_measure(info.get("Height"), "Height")
    weight = parse_measure(info.get("Weight"), "Weight")
    group = None if is_blank(info.get("Group")) else info["Group"].strip()
    return dict(ed=ed, es=es, nb_frames=nb_frames, height=height, weight=weight, group=group,
                bmi=bmi_from_height_weight(height, weight), bmi_undefined=bmi_note(height, weight))


def _patient_folders(root: Path, unreadable: list[Path], stand_ins: dict[str, Path] | None = None) -> dict[str, list[Path]]:
    """``patientNNN`` folders below `root` by id; folders that could not be listed are
    appended to `unreadable`. Files named as a patient folder (``patient002``, or its archive
    ``patient002.zip``), of ids with no folder, go to `stand_ins` by id: with no metadata table
    to name the patient, such a patient was otherwise lost without a word."""
    found: dict[str, list[Path]] = {}
    files: dict[str, Path] = {}
    if PATIENT_DIR.match(root.name):
        found[_patient_id(root.name)] = [root]
    for dirpath, dirnames, filenames in walk_folders(root, unreadable):
        for d in dirnames:
            if PATIENT_DIR.match(d):
                found.setdefault(_patient_id(d), []).append(Path(dirpath) / d)
        for f in filenames:
            name = archive_stem(f)  # a dangling link to a patient folder is listed as a file too
            if PATIENT_DIR.match(name):
                files.setdefault(_patient_id(name), Path(dirpath) / f)
    if stand_ins is not None:
        stand_ins.update({pid: path for pid, path in files.items() if pid not in found})
    return found


def _release_folder(folder: Path, root: Path) -> str:
    """Where the patient sits in the release relative to `root` ("training", "" if flat)."""
    if folder == root:
        return ""
    rel = str(folder.parent.relative_to(root))
    return "" if rel == "." else rel


def _info_file(folder: Path) -> Path:
    """`folder/Info.cfg`, or the one file whose name differs from it only in case (`info.cfg`,
    copied through a case-insensitive file system); where none or several do, `folder/Info.cfg`."""
    exact = folder / INFO_FILE
    if exact.is_file():
        return exact
    others = [p for p in folder.iterdir()
              if not is_ignored_entry(p.name) and p.name.lower() == INFO_FILE.lower() and p.is_file()]
    return others[0] if len(others) == 1 else exact


def _read_info(pid: str, folder: Path, quarantine: list[QuarantineRow]) -> dict | None:
    """The parsed Info.cfg of a patient folder, or None with the patient quarantined."""
    cfg = _info_file(folder)
    if not cfg.is_file():
        # a folder of that name (an unpacking accident) is named as such: "has no Info.cfg"
        # would contradict what the reader sees in the folder; so would it for a symbolic link
        # whose target is gone (a data folder moved or not mounted)
        why = (f"has {cfg.name}, but it is a folder, not a file" if cfg.is_dir() else
               f"has {cfg.name}, but it is a symbolic link to {os.readlink(cfg)}, which does not exist"
               if is_dangling_link(cfg) else f"has no {INFO_FILE}")
        quarantine.append(QuarantineRow(
            pid, SOURCE, str(cfg), "missing_metadata", f"patient folder {folder} {why}",
        ))
        return None
    try:
        return _parse_info(read_info_cfg(cfg))
    except ValueError as exc:
        quarantine.append(QuarantineRow(
            pid, SOURCE, str(cfg), "bad_metadata", f"patient {pid}: {cfg} {exc}",
        ))
        return None


def _find_files(pid: str, folder: Path, info: dict, problems: list[QuarantineRow]) -> tuple[Path | None, dict]:
    """The cine, and the ED and ES label files (of the frames Info.cfg names) by phase."""
    image = find_nifti_or_quarantine(folder, f"{pid}_4d", pid, SOURCE, "missing_image", "cine", problems)
    masks = {}
    for phase, reason in (("ED", "missing_ed_mask"), ("ES", "missing_es_mask")):
        number = info[phase.lower()]
        masks[phase] = find_nifti(folder, f"{pid}_frame{number:02d}_gt")
        if masks[phase] is None:
            expected, why = missing_nifti(folder, f"{pid}_frame{number:02d}_gt")
            problems.append(QuarantineRow(
                pid, SOURCE, str(expected), reason,
                f"patient {pid}: the {phase} segmentation {expected} (frame {number} "
                f"in {INFO_FILE}) {why}",
            ))
    return image, masks


def _entry(pid: str, root: Path, folder: Path, info: dict, image: Path, masks: dict, mapping: dict) -> PatientEntry:
    diagnosis, excluded = map_diagnosis(info["group"], mapping)
    extra = {
        "group": info["group"],
        "nb_frames": info["nb_frames"],
        "height_cm": info["height"],
        "weight_kg": info["weight"],
        "release_folder": _release_folder(folder, root),
    }
    for phase in ("ED", "ES"):
        frame_image = find_nifti(folder, f"{pid}_frame{info[phase.lower()]:02d}")
        if frame_image is not None:
            extra[f"{phase.lower()}_image"] = str(frame_image.absolute())
    if excluded:
        extra["excluded_reason"] = excluded
    if info["bmi_undefined"]:
        extra["bmi_undefined"] = info["bmi_undefined"]
    return PatientEntry(
        patient_id=pid,
        source=SOURCE,
        image_path=str(image.absolute()),
        ed_mask=MaskRef(str(masks["ED"].absolute())),
        es_mask=MaskRef(str(masks["ES"].absolute())),
        label_map=dict(ACDC_MAP),
        ed_frame=info["ed"] - 1,
        es_frame=info["es"] - 1,
        sex=None,
        age=None,
        bmi=info["bmi"],
        diagnosis=diagnosis,
        vendor=ACDC_VENDOR,
        site=ACDC_SITE,
        extra=extra,
        metadata_ref=metadata_ref((folder / INFO_FILE).absolute()),
    )


def scan_acdc(root: str | Path, *, diagnosis_map: dict | None = None) -> ScanResult:
    """Entries and quarantine rows of an ACDC cohort (see module docstring).

    `diagnosis_map` (group -> "hf" | "healthy" | None) is merged over the defaults.
    Raises SourceMissingError when `root` is missing or holds no ``patientNNN`` folder.
    """
    mapping = resolve_diagnosis_map(ACDC_DIAGNOSIS_DEFAULT, diagnosis_map)
    root = require_dir(root, "ACDC folder (patientNNN/Info.cfg)")
    unreadable: list[Path] = []
    stand_ins: dict[str, Path] = {}
    found = _patient_folders(root, unreadable, stand_ins)
    if not found:
        unseen = f" (could not read {', '.join(map(str, sorted(set(unreadable))))})" if unreadable else ""
        packed = (f" (but {len(stand_ins)} file(s) named as one, such as {min(stand_ins.values())}: unpack them)"
                  if stand_ins else "")
        raise SourceMissingError(
            f"ACDC: looked below {root.resolve()} for patientNNN folders and found none{unseen}{packed}"
        )

    entries: list[PatientEntry] = []
    quarantine = unreadable_below_rows(unreadable, [f for folders in found.values() for f in folders], SOURCE)
    quarantine.extend(QuarantineRow(pid, SOURCE, str(path), "missing_image",
                                    f"patient {pid}: no patient folder{stand_in_note(path)}")
                      for pid, path in sorted(stand_ins.items()))
    kept_by_number: dict[int, Path] = {}
    for pid in sorted(found, key=_release_spelling_first):
        folder, *others = distinct_folders(pid, sorted(found[pid], key=str))
        quarantine.extend(duplicate_folder_row(pid, SOURCE, other, folder) for other in others)
        if _number(pid) in kept_by_number:
            quarantine.append(_same_number_row(pid, folder, kept_by_number[_number(pid)]))
            continue
        kept_by_number[_number(pid)] = folder
        cannot_read = unreadable_folder_row(pid, SOURCE, folder)
        if cannot_read:
            quarantine.append(cannot_read)
            continue
        info = _read_info(pid, folder, quarantine)
        if info is None:
            continue
        problems: list[QuarantineRow] = []
        image, masks = _find_files(pid, folder, info, problems)
        if problems:
            quarantine.extend(problems)
            continue
        entries.append(_entry(pid, root, folder, info, image, masks, mapping))
    return ScanResult(entries, quarantine)
