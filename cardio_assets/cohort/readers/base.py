"""What every reader returns: patient entries pointing at files, and quarantine rows.

A reader only looks at the layout and the metadata table (cheap); opening the volumes,
checking voxels and labels, and finding ES is done once for all sources by
`cardio_assets.cohort.validation.validate_entry`.
"""

from __future__ import annotations

import logging
import math
import os
import re
import unicodedata
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MaskRef:
    """Where one phase's label map lives: a 3D file, or one frame of a 4D file."""

    path: str
    frame: int | None = None  # index into the 4th axis of a 4D label file, else None


@dataclass
class PatientEntry:
    patient_id: str
    source: str  # "phantom" | "ukbb" | "mms" | "acdc"
    image_path: str  # 4D cine (x, y, z, t)
    ed_mask: MaskRef
    es_mask: MaskRef
    label_map: dict[int, int]  # source label -> canonical (see cardio_assets.cohort.labels)
    ed_frame: int = 0  # 0-based index into the cine
    es_frame: int | None = None  # 0-based; None: found from the images (smallest LV)
    sex: str | None = None  # "female" | "male" | None when the source lacks it
    age: float | None = None
    bmi: float | None = None
    diagnosis: str | None = None  # "healthy" | "hf" | None (excluded or unknown)
    subset: str = "study"  # "study" | "heldout" (phantom's balanced cohort, never trained on)
    vendor: str | None = None  # scanner vendor (M&Ms-1: its letter A-D), None when unknown
    site: str | None = None  # where the patient was scanned (centre), None when unknown
    extra: dict = field(default_factory=dict)  # source-specific: vendor, centre, pathology...
    metadata_ref: str = ""  # where the attributes came from: "table path:line" (ACDC: its Info.cfg)


@dataclass(frozen=True)
class QuarantineRow:
    patient_id: str
    source: str
    file: str  # the file (or metadata table) the problem is in
    reason: str  # short machine-friendly code, e.g. "missing_es_mask"
    detail: str  # human sentence naming the problem

    def __post_init__(self) -> None:
        # a name that is not UTF-8 on disk would stop the run where the row is stored: write it escaped
        for name in ("patient_id", "file", "detail"):
            object.__setattr__(self, name, printable(getattr(self, name)))

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class ScanResult:
    entries: list[PatientEntry]
    quarantine: list[QuarantineRow]


class SourceMissingError(FileNotFoundError):
    """The configured source folder or metadata table does not exist or holds no patients."""


def is_utf8(text: str) -> bool:
    """Whether `text` can be written as UTF-8: False for a file name whose bytes on disk are not
    UTF-8 (a zip made on Windows, unpacked on Linux, names folders in Latin-1 or code page 437),
    which Python keeps as lone surrogates (``os.fsdecode``) that no Parquet table, database or
    log accepts."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable(text: str) -> str:
    """`text`, with the bytes of a name that are not UTF-8 (`is_utf8`) written as ``\\xNN`` escapes
    ("Donn\\xe9es" for Latin-1 "Données"), so that it can be stored and shown."""
    if is_utf8(text):
        return text
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate no file name decodes to
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def require_dir(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise SourceMissingError(f"{what}: looked for a folder at {p.resolve()} and found none")
    return p


def require_file(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.is_file():
        found = ("a folder" if p.is_dir() else
                 f"a symbolic link to {os.readlink(p)}, which is not a readable file" if p.is_symlink() else "none")
        raise SourceMissingError(f"{what}: looked for a file at {p.resolve()} and found {found}")
    return p


# --- Parsing helpers shared by the readers (metadata cells are read as strings) ---------

# what exports and people write for "no value": pandas' NA spellings, Excel's #N/A error, and
# the "?" and "-" typed into a cell left unknown (compared stripped and lower-cased)
MISSING_TOKENS: frozenset[str] = frozenset(
    {"", "na", "nan", "none", "null", "n/a", "n.a.", "#n/a", "#na", "<na>", "-", "?"})
NIFTI_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii")


_DECIMAL_COMMA = re.compile(r"[+-]?\d+,\d+")


def utf16_without_bom(head: bytes) -> str | None:
    """"utf-16-le" / "utf-16-be" for UTF-16 text saved without a byte-order mark, else None.

    Its ASCII characters leave every other byte zero (read as UTF-8, the zeros would end up
    inside every key and column name), whereas UTF-8 and Latin-1 text hold no zero bytes but
    the padding a crashed write leaves at a file's end, zeros at odd and even offsets alike:
    so UTF-16 is zeros in at least a quarter of the bytes, nearly all at one parity."""
    even, odd = head[0::2].count(0), head[1::2].count(0)
    if 4 * max(even, odd) < len(head) or 4 * min(even, odd) > max(even, odd):
        return None
    return "utf-16-le" if odd > even else "utf-16-be"


# Tried in turn on text that is not UTF-8: Windows-1252 (what Excel and Notepad write on
# Western-European Windows: "®", "™", "–", "€" live in bytes 0x80-0x9F, where Latin-1 has
# invisible control characters), then Latin-1, which decodes every byte, so an accent never
# stops a run.
LEGACY_ENCODINGS: tuple[str, ...] = ("cp1252", "latin-1")


def decode_text(data: bytes) -> str:
    """Text of a metadata file as real exports write it: UTF-8 with or without a byte-order
    mark, UTF-16 with one (Excel's "Unicode text") or without, else Windows-1252 or Latin-1
    (old Windows exports; `LEGACY_ENCODINGS`)."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    utf16 = utf16_without_bom(data[:512])
    if utf16:
        return data.decode(utf16, errors="replace")
    data = data.replace(b"\x00", b"")  # a crashed write's zero padding: no text
    for encoding in ("utf-8-sig", *LEGACY_ENCODINGS):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise AssertionError("unreachable: Latin-1 decodes every byte")


# What a metadata "table" is when it is not text: a workbook saved from Excel or LibreOffice
# (xlsx, xlsm and ods are zip archives, xls an OLE2 compound file). Read as CSV, its bytes gave
# a header of mojibake and an error listing that as the columns found.
_ZIP_MAGIC, _OLE2_MAGIC = b"PK\x03\x04", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


def spreadsheet_kind(path: Path) -> str | None:
    """What a binary metadata file is ("an Excel workbook (.xlsx)", ...), else None (text)."""
    with open(path, "rb") as handle:
        head = handle.read(8)
    if head.startswith(_OLE2_MAGIC):
        return "an old-format Excel workbook (.xls)"
    if not head.startswith(_ZIP_MAGIC):
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            mimetype = archive.read("mimetype").decode("ascii", "replace") if "mimetype" in names else ""
    except (zipfile.BadZipFile, OSError, KeyError):
        return "a zip archive (unreadable)"
    if any(n.startswith("xl/") for n in names):
        return "an Excel workbook (.xlsx)"
    if "opendocument.spreadsheet" in mimetype:
        return "an OpenDocument spreadsheet (.ods)"
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return f"a zip archive (holding {shown or 'nothing'})"


def require_text_table(path: Path, what: str) -> None:
    """MetadataFormatError, naming the file and the fix, when `path` is a spreadsheet workbook
    or an archive rather than CSV text (no spreadsheet reader is a dependency)."""
    with open(path, "rb") as handle:
        head = handle.read(1 << 16)
    if head and not head.strip(b"\x00"):
        raise MetadataFormatError(f"{what} {path} holds only zero bytes (a write that never completed, or a damaged "
                                  f"copy): give an intact copy of the table")
    kind = spreadsheet_kind(path)
    if kind is None:
        return
    fix = ("unpack it and give the CSV inside" if kind.startswith("a zip") else
           "open it in Excel or LibreOffice and save it as CSV (File > Save As > CSV), then give the .csv file")
    raise MetadataFormatError(f"{what} {path} is {kind}, not a CSV text table: {fix}")


def metadata_ref(path, line: int | None = None) -> str:
    """"path:line" of a metadata row (just the path for a whole file, e.g. ACDC's Info.cfg)."""
    return f"{path}:{line}" if line is not None else str(path)


class MetadataFormatError(ValueError):
    """A metadata table lacks a required column (message names the file and the columns)."""


def is_blank(value) -> bool:
    """True for None, NaN and empty/placeholder strings ("", "NA", "nan", ...)."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return visible_text(value).lower() in MISSING_TOKENS


def visible_text(value) -> str:
    """A cell's text without surrounding spaces and zero bytes (NUL: the padding a write cut short
    by a crash or power loss leaves where the file's end should be; it holds no value)."""
    return str(value).replace("\x00", "").strip()


def parse_number(value, what: str, *, positive: bool = True) -> float | None:
    """A finite float, or None when blank; ValueError (naming `what`) when unparsable."""
    if is_blank(value):
        return None
    text = str(value).strip()
    if _DECIMAL_COMMA.fullmatch(text):  # "24,5" from a European export (';'-separated)
        text = text.replace(",", ".")
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"{what} {str(value).strip()!r} is not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"{what} {value!r} is not finite")
    if positive and number <= 0:
        raise ValueError(f"{what} {value!r} is not positive")
    return number


def parse_frame(value, what: str) -> int | None:
    """A non-negative integer frame index (``"5"`` or ``"5.0"``), None when blank."""
    if is_blank(value):
        return None
    number = parse_number(value, what, positive=False)
    if number < 0 or number != int(number):
        raise ValueError(f"{what} {value!r} is not a non-negative whole number")
    return int(number)


_SEX_WORDS = {
    "female": "female", "f": "female", "0": "female", "woman": "female", "w": "female",
    "male": "male", "m": "male", "1": "male", "man": "male",
}


def parse_sex(value, what: str = "sex") -> str | None:
    """"female" | "male" from female/male/F/M/0/1 (UK Biobank field 31: 0 female, 1 male)."""
    if is_blank(value):
        return None
    text = str(value).strip().lower()
    if re.fullmatch(r"[01]\.0+", text):
        text = text[0]
    if text not in _SEX_WORDS:
        raise ValueError(f"{what} {str(value).strip()!r} is not one of female/male/F/M/0/1")
    return _SEX_WORDS[text]


def parse_measure(value, what: str) -> float | None:
    """A height or weight: a finite number >= 0, None when blank; ValueError (naming `what`)
    when unparsable or negative. Zero is kept: exports write it for "not measured", and
    `bmi_from_height_weight` then gives no BMI (the 0 stays in the entry's extra)."""
    number = parse_number(value, what, positive=False)
    if number is not None and number < 0:
        raise ValueError(f"{what} {str(value).strip()!r} is negative")
    return number


def bmi_from_height_weight(height, weight) -> float | None:
    """BMI = kg / m^2 from height (cm; a value <= 3 is taken as metres) and weight (kg).

    None when either is missing (None) or zero (not measured: a BMI of 0 or infinity would be
    made up). Inputs are already-parsed non-negative floats (`parse_measure`). ValueError when
    the two give no finite BMI (a height so small that its square is zero)."""
    if not height or not weight:
        return None
    metres = height if height <= 3.0 else height / 100.0
    bmi = float(weight) / metres / metres
    if not math.isfinite(bmi):
        raise ValueError(f"height {height:g} and weight {weight:g} give no finite BMI")
    return bmi


def bmi_note(height, weight) -> str | None:
    """Why `bmi_from_height_weight` gave no BMI when a height or weight of 0 ("not measured")
    was recorded ("height 0"), for the entry's extra and its no-cell reason; None otherwise."""
    zeros = [name for name, value in (("height", height), ("weight", weight)) if value == 0]
    return f"{' and '.join(zeros)} 0" if zeros else None


def without_format_characters(text: str) -> str:
    """`text` without Unicode format characters (category Cf): zero-width spaces and joiners,
    the word joiner, left-to-right and right-to-left marks, soft hyphens, and a byte-order mark
    left inside the text (two exports concatenated, or a header re-saved). They come with values
    copied from web pages, Word or e-mail and print as nothing, so "1234567" and "1234567" plus
    a zero-width space, which look the same in every message, named two patients."""
    return "".join(ch for ch in text if unicodedata.category(ch) != "Cf")


def normalise_id(text: str) -> str:
    """`text` in Unicode NFC without format characters (`without_format_characters`), the form
    ids are compared and paired in.

    One name has two encodings when it holds an accent: "é" as one code point (NFC, as most
    tools and Windows write it) or as "e" plus a combining accent (NFD, as macOS file systems
    store names). A table row and a folder, or two folders, that differ only so name the same
    patient. Only the comparison key changes: paths are kept as found on disk."""
    return unicodedata.normalize("NFC", without_format_characters(text))


def clean_header(name) -> str:
    """A metadata column name as the readers match it: stripped of surrounding spaces
    (non-breaking ones included) and of invisible format characters."""
    return without_format_characters(str(name)).strip()


# a unit after a column name, "Height (cm)", "BMI [kg/m2]": the units the readers assume anyway
# (height in cm or m, weight in kg, age in years); any other unit ("Weight (lbs)") is not
# stripped, so that column is not taken for one in the assumed unit
_KNOWN_UNIT = re.compile(r"\s*[(\[]\s*(?:cm|m|kg|kg/m2|kg/m\^2|kg/m²|years?|yrs?|y)\s*[)\]]\s*$", re.IGNORECASE)


def column_key(name) -> str:
    """The key a column name is matched on: `clean_header`, lower case, a known unit suffix
    dropped (`_KNOWN_UNIT`), and spaces, underscores and hyphens removed, so "Patient ID",
    "patient_id" and "PatientID" are one name, and "Height (cm)" is "height"."""
    text = _KNOWN_UNIT.sub("", clean_header(name)).lower()
    return "".join(ch for ch in text if ch not in " _-\u00a0")


# An id column Excel took for numbers comes back as floats: "1234567.0" for eid 1234567.
_EXCEL_FLOAT_ID = re.compile(r"(\d+)\.0+")
# ... and, where the column was given a number format, with its digits grouped in thousands as
# the locale writes them: "1,234,567" (English), "1.234.567" (German), "1 234 567" (French, with a
# no-break or narrow no-break space), "1'234'567" (Swiss). One separator throughout; a single "."
# group ("1.234") is left alone, as it reads as a decimal.
_GROUPED_ID = re.compile(r"\d{1,3}(?:([,'\u00a0\u202f ])\d{3})(?:\1\d{3})*|\d{1,3}(?:\.\d{3}){2,}")


def table_id(value) -> str:
    """The patient id of a metadata cell: stripped, in NFC (`normalise_id`), and a whole number
    written as a float ("1234567.0", as Excel saves a numeric column) read as that number, so
    it pairs with its folder ``1234567``, and so is one with its digits grouped in thousands
    ("1,234,567", "1.234.567", "1 234 567": a number format given to the column; `_GROUPED_ID`),
    and so is one Excel wrote in scientific notation with all its digits ("1.234567E+06";
    `_scientific_whole_number`). Leading zeros are kept ("001" stays "001")."""
    text = normalise_id(str(value)).strip()  # after: a zero-width space can hide a space
    if _GROUPED_ID.fullmatch(text):
        text = re.sub(r"\D", "", text)
    excel = _EXCEL_FLOAT_ID.fullmatch(text)
    if excel:
        return excel[1]
    return _scientific_whole_number(text) or text


def _scientific_whole_number(text: str) -> str | None:
    """The digits of an id Excel wrote in scientific notation with every digit shown
    ("1.000001E+06" is 1000001), else None: one with digits hidden ("1E+06", which may have been
    1000001) is no number that can be known (`_scientific_id_hint` says so)."""
    match = _SCIENTIFIC_ID.fullmatch(text)
    if match is None:
        return None
    digits = match[1] + (match[2] or "")
    exponent = int(text[text.upper().rindex("E") + 1:])
    return digits if exponent == len(digits) - 1 else None


def code_text(value) -> str | None:
    """A code cell (a site or centre number) as text: stripped, None when blank,
    and a whole number written as a float ("11025.0", "3.0") read as that number.

    A numeric column holding one blank cell is saved by pandas (and by Excel's number formats) as
    floats throughout: UK Biobank's field 54 became site "11025.0", which is not the Cheadle centre
    "11025" names, and an M&Ms-1 centre "3.0" and "3" were two sites, so a hold-out of site 3 missed
    the patients saved as "3.0"."""
    if is_blank(value):
        return None
    text = str(value).strip()
    excel = _EXCEL_FLOAT_ID.fullmatch(text)
    return excel[1] if excel else text


def is_empty_row(values) -> bool:
    """True for a table row with nothing in it (every field empty or spaces): what a spreadsheet
    exports for formatted rows below the data (",,,,"). Such a row is no patient and holds no
    data, so readers skip it without a quarantine row."""
    return all(not visible_text(v) for v in values)


def repeats_header(record: dict, id_column: str) -> bool:
    """True for a row that is the table's header again: two exports concatenated (``cat a.csv
    b.csv``) repeat it mid-table, byte-order mark and all. Its id cell holds the id column's name
    and every other non-empty cell its column's name (compared as `column_key`); it is no
    patient, so readers skip it as they skip empty rows."""
    return column_key(record[id_column]) == column_key(id_column) and all(
        column_key(value) == column_key(name) for name, value in record.items() if str(value).strip())


def folder_problem(folder: Path) -> str | None:
    """Why the files of `folder` cannot be looked at ("Permission denied"), else None: its
    listing (read permission) and its entries (search permission) are both needed."""
    try:
        os.listdir(folder)
        os.stat(os.path.join(folder, os.curdir))
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None


def unreadable_folder_row(pid: str, source: str, folder: Path) -> QuarantineRow | None:
    """An ``unreadable_folder`` row for a patient folder whose files cannot be looked at (no
    read or search permission), else None; the caller then skips the patient."""
    why = folder_problem(folder)
    if why is None:
        return None
    return QuarantineRow(pid, source, str(folder), "unreadable_folder",
                         f"patient {pid}: the patient folder {folder} cannot be read ({why}); its files were not looked at")


def walk_folders(root: Path, unreadable: list[Path]):
    """`os.walk` of `root` in sorted order, ignored entries (`is_ignored_entry`) skipped; the
    folders it could not list are appended to `unreadable` (os.walk skips them silently).

    Symbolic links to folders are followed: a release split (``testing -> /data/acdc/testing``)
    or patient folders linked in from other storage are part of the cohort, and os.walk's
    default left them unseen (ACDC lost such patients without a word). A link to a folder above
    it (a loop: the same device and inode as the folder or one of its parents) is not entered,
    so the walk ends. (Two links to one folder are both walked: the readers then read a patient
    found so once, `distinct_folders`.)"""
    def note(exc: OSError) -> None:
        if exc.filename:
            unreadable.append(Path(exc.filename))

    above: dict[str, frozenset] = {str(root): frozenset({_folder_key(root)})}  # a folder and its parents
    for dirpath, dirnames, filenames in os.walk(root, onerror=note, followlinks=True):
        chain = above.pop(dirpath, frozenset())
        kept = []
        for d in sorted(d for d in dirnames if not is_ignored_entry(d)):
            key = _folder_key(Path(dirpath) / d)
            if key is None or key not in chain:  # unstat-able: os.walk reports it if unlistable
                above[os.path.join(dirpath, d)] = chain | {key}
                kept.append(d)
        dirnames[:] = kept
        yield dirpath, dirnames, [f for f in filenames if not is_ignored_entry(f)]


def _folder_key(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the folder `path` is or links to; None when it cannot be looked at."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def unreadable_below_rows(unreadable: list[Path], patient_folders, source: str) -> list[QuarantineRow]:
    """``unreadable_folder`` rows (no patient id) for folders below a cohort's root that could not
    be listed and are not patient folders themselves (those get a row per patient): any patients
    inside them are unseen, so the run says where."""
    known = {Path(f) for f in patient_folders}
    return [QuarantineRow("", source, str(folder), "unreadable_folder",
                          f"the folder {folder} cannot be read ({folder_problem(folder) or 'unreadable'}); "
                          f"patients inside it, if any, were not seen")
            for folder in sorted(set(unreadable)) if folder not in known]


# macOS leaves these behind: ``__MACOSX/`` in a zip it made (a copy of the folder tree holding
# ``._name`` AppleDouble resource forks), ``._name`` files next to the real ones on non-Mac
# volumes, and ``.DS_Store``. Read as data they would be second patient folders (duplicate_id)
# or unreadable "NIfTI" files.
MACOS_ARCHIVE_FOLDER = "__MACOSX"


def is_ignored_entry(name: str) -> bool:
    """True for a folder or file name no reader scan should look at: hidden entries (any name
    starting with ".", which covers ``.DS_Store`` and ``._name``) and ``__MACOSX``."""
    return name.startswith(".") or name == MACOS_ARCHIVE_FOLDER


def find_nifti(folder: Path, stem: str) -> Path | None:
    """``folder/stem.nii.gz`` or ``folder/stem.nii``, whichever exists first; else the one
    file whose name differs from those only in letter case (``sa.NII.GZ``, as some Windows
    tools and DICOM converters write it; nibabel reads the extension in any case) or in
    Unicode normalisation (an accented id stored in NFD by macOS); else None."""
    for suffix in NIFTI_SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    others = _case_variants(folder, stem)
    return others[0] if len(others) == 1 else None


def _case_variants(folder: Path, stem: str) -> list[Path]:
    """The files in `folder` named ``stem.nii.gz`` / ``stem.nii`` but for letter case and
    Unicode normalisation, sorted; ignored entries (`is_ignored_entry`) left out."""
    wanted = {normalise_id(f"{stem}{suffix}").casefold() for suffix in NIFTI_SUFFIXES}
    try:
        return sorted(p for p in folder.iterdir()
                      if not is_ignored_entry(p.name) and normalise_id(p.name).casefold() in wanted and p.is_file())
    except OSError:  # the folder itself unreadable: reported as the file not found
        return []


def _same_values(a: dict, b: dict) -> bool:
    """Two copies of a row agree: equal once each value is stripped and in NFC (a copy pasted
    with a stray space around its id or a value, or with its accents in NFD, is still the
    same row)."""
    strip = lambda values: {k: normalise_id(str(v).strip()) for k, v in values.items()}  # noqa: E731
    return strip(a) == strip(b)


def split_duplicates(
    rows: list[tuple[int, str, dict]], *, source: str, file: str
) -> tuple[dict[str, tuple[int, dict]], list[QuarantineRow]]:
    """Resolve ids that occur more than once in a metadata table.

    `rows` are ``(line number, patient id, raw values)`` in table order. Ids that differ
    only in case (``A1`` and ``a1``) are the same id: one patient typed twice, or two that
    a case-insensitive file system or a spreadsheet would merge; so are ids that differ only
    in Unicode normalisation (`normalise_id`), the same text. Policy:

    - every copy identical: the first is kept, each later copy is quarantined
      (``duplicate_id``), so nothing is lost and the table's mistake is visible;
    - copies that disagree (a different spelling of the id included): *all* copies are
      quarantined, since nothing says which is right.

    Returns the kept rows by id and the quarantine rows (each under its copy's spelling).
    """
    by_id: dict[str, list[tuple[int, str, dict]]] = {}
    for line, pid, values in rows:
        by_id.setdefault(normalise_id(pid).casefold(), []).append((line, pid, values))
    kept: dict[str, tuple[int, dict]] = {}
    quarantine: list[QuarantineRow] = []
    for copies in by_id.values():
        first_line, first_pid, first_values = copies[0]
        if len(copies) == 1:
            kept[first_pid] = (first_line, first_values)
            continue
        lines = ", ".join(str(line) for line, _, _ in copies)
        spellings = sorted({pid for _, pid, _ in copies})
        as_ = f" as {', '.join(spellings)} (ids differing only in case)" if len(spellings) > 1 else ""
        identical = all(_same_values(values, first_values) for _, _, values in copies[1:])
        if identical:
            kept[first_pid] = (first_line, first_values)
            for line, pid, _ in copies[1:]:
                quarantine.append(QuarantineRow(
                    pid, source, file, "duplicate_id",
                    f"patient {pid} appears {len(copies)} times in {file} (lines {lines}); "
                    f"the copies are identical, so line {first_line} is kept and the copy "
                    f"on line {line} is quarantined",
                ))
        else:
            for line, pid, _ in copies:
                quarantine.append(QuarantineRow(
                    pid, source, file, "duplicate_id",
                    f"patient {pid} appears {len(copies)} times in {file} (lines {lines}){as_} "
                    f"with conflicting values; every copy (this one on line {line}) is "
                    f"quarantined since nothing says which is right",
                ))
    return kept, quarantine


# An id Excel showed in scientific notation ("1E+06", "1.23457E+11": a number wider than its
# column, or of 12 digits or more) and saved to CSV as shown: the digits not shown are lost, so the
# row pairs with no folder. Excel always writes the exponent's sign, so an id such as M&Ms-1's
# "6E1234" does not match.
_SCIENTIFIC_ID = re.compile(r"(\d)(?:[.,](\d+))?E[+-]\d+", re.IGNORECASE)


def _scientific_id_hint(name: str, others) -> str:
    """Why a row's id `name` written in scientific notation (`_SCIENTIFIC_ID`) finds no folder, or,
    for a folder `name`, which unmatched row id of `others` may be its id so mangled (the folder's
    number rounded to the digits shown); else ""."""
    fix = ("format the id column as Text (or Number with no decimals) in the spreadsheet, "
           "or export the table again from its source")
    if _SCIENTIFIC_ID.fullmatch(name):
        return (f" ({name!r} is a number in scientific notation, as Excel shows a long number and saves it to "
                f"CSV with only the digits shown, so the id's other digits are lost: {fix})")
    if not name.isdigit():
        return ""
    for other in sorted(others):
        match = _SCIENTIFIC_ID.fullmatch(other)
        if match is None:
            continue
        digits = 1 + len(match[2] or "")
        if float(f"{int(name):.{digits - 1}e}") == float(other.replace(",", ".")):
            return (f" (the table's id {other!r} may be this one, written in scientific notation by Excel, "
                    f"which keeps only the digits shown: {fix})")
    return ""


def _differs_only_in_leading_zeros(name: str, others) -> str:
    """" (compare '001234', ...)" when one of `others` is the number `name` but for leading zeros,
    else "": Excel reads an id column of digits as numbers and drops their leading zeros ("001234"
    saved as "1234"), so the row and its folder were two unexplained quarantine rows. They are not
    paired: "1234" and "001234" may be two patients."""
    if not name.isdigit():
        return ""
    near = sorted(o for o in others if o != name and o.isdigit() and o.lstrip("0") == name.lstrip("0"))
    return (f" (compare {near[0]!r}, which differs only in leading zeros: Excel drops them from an id column "
            f"it reads as numbers; format the column as Text, or export the table again)") if near else ""


def _differs_only_in_case_or_spaces(name: str, others) -> str:
    """" (compare 'X ', which differs only in case or surrounding spaces)" when one of
    `others` is `name` but for those, else "": the likely fix for an unmatched row or folder."""
    key = name.strip().casefold()
    near = sorted(o for o in others if o != name and o.strip().casefold() == key)
    return f" (compare {near[0]!r}, which differs only in case or surrounding spaces)" if near else ""


def pair_rows_with_folders(kept: dict, folders: dict, skip: set, source: str, table_name: str,
                           missing_folder, quarantine: list):
    """Yield (pid, line, record, folder) for patients with both a metadata row and a folder.

    A folder without a row is quarantined as `missing_metadata`, a row without a folder as
    `no_images` (`missing_folder(pid)` gives the (file, description) to report). Ids in
    `skip` were already quarantined (e.g. every copy of a conflicting duplicate).
    """
    for pid in sorted(set(kept) | set(folders)):
        if pid in skip:
            continue
        if pid not in kept:
            hint = (_differs_only_in_case_or_spaces(pid, set(kept) - set(folders))
                    or _differs_only_in_leading_zeros(pid, set(kept) - set(folders))
                    or _scientific_id_hint(pid, set(kept) - set(folders)))
            quarantine.append(QuarantineRow(
                pid, source, table_name, "missing_metadata",
                f"patient folder {folders[pid]} has no row in metadata table {table_name}{hint}",
            ))
            continue
        line, record = kept[pid]
        if pid not in folders:
            file, where = missing_folder(pid)
            hint = (_differs_only_in_case_or_spaces(pid, set(folders) - set(kept))
                    or _differs_only_in_leading_zeros(pid, set(folders) - set(kept))
                    or _scientific_id_hint(pid, set(folders) - set(kept)))
            quarantine.append(QuarantineRow(
                pid, source, file, "no_images",
                f"patient {pid} (line {line} of {table_name}) has no folder {where}{hint}",
            ))
            continue
        yield pid, line, record, folders[pid]


def parse_or_quarantine(parse, record, pid: str, line: int, source: str, table_name: str, problems: list):
    """`parse(record)`, or None with a `missing_metadata` row added to `problems`."""
    try:
        return parse(record)
    except ValueError as exc:
        problems.append(QuarantineRow(
            pid, source, table_name, "missing_metadata", f"patient {pid}: line {line} of {table_name}: {exc}",
        ))
        return None


def table_rows_by_id(records: list[dict], id_column: str, id_name: str, source: str, table_name: str,
                     quarantine: list, values=None, lines: list[int] | None = None) -> tuple[dict[str, tuple[int, dict]], set[str]]:
    """The rows of a metadata table by patient id, duplicates resolved by `split_duplicates`.

    A row without an id is quarantined as `missing_metadata` (named by its line; the header
    is line 1), and so are duplicates, in `quarantine`. `values(record)` is what is kept and
    compared between copies (default: the whole row). `lines`: each record's line in the file
    (`read_metadata_table`'s `attrs["lines"]`); None counts the header as line 1 and no blank
    or skipped line. Returns the kept `(line, values)` by id and the ids none of whose copies
    was kept.
    """
    rows: list[tuple[int, str, dict]] = []
    for index, record in enumerate(records):
        line = lines[index] if lines is not None else index + 2
        if is_empty_row(record.values()) or repeats_header(record, id_column):
            continue
        pid = table_id(record[id_column])  # paired with folder names in NFC
        record = {**record, id_column: pid}  # copies "1234567" and "1234567.0" are identical
        if is_blank(pid):
            # a placeholder ("NA", "nan", "-") is how exports write a missing id: say so, since a
            # patient folder of that very name then finds no row
            placeholder = f" ({pid!r} reads as a missing value)" if pid else ""
            quarantine.append(QuarantineRow(
                "", source, table_name, "missing_metadata",
                f"line {line} of metadata table {table_name} has no {id_name}{placeholder}; the row is skipped",
            ))
            continue
        rows.append((line, pid, record if values is None else values(record)))
    kept, duplicates = split_duplicates(rows, source=source, file=table_name)
    quarantine.extend(duplicates)
    return kept, {q.patient_id for q in duplicates} - set(kept)


def quarantine_bad_rows(table, header: list[str], id_column: str, source: str, table_name: str,
                        quarantine: list) -> set[str]:
    """Quarantine (``missing_metadata``) the rows `read_metadata_table` could not split into
    the `header`'s columns (``table.attrs["bad_rows"]``, every field of the line), each
    named by its id field. Returns those ids: their folders are then not reported as
    lacking a row."""
    columns = list(header)
    position = columns.index(id_column)
    ids: set[str] = set()
    bad_rows = table.attrs.get("bad_rows", [])
    stray = table.attrs.get("stray_trailing_fields", 0)
    for fields, line in zip(bad_rows, table.attrs.get("bad_row_lines") or [None] * len(bad_rows)):
        if is_empty_row(fields):
            continue
        pid = table_id(fields[position]) if position < len(fields) else ""
        where = f"line {line} of metadata table {table_name}" if line else f"a row of metadata table {table_name}"
        if len(fields) > len(columns) + stray:
            habit = (f" even without the {stray} empty field(s) every row of the table ends with" if stray else "")
            why = (f"more fields than columns{habit} (an unquoted separator inside a value, such as a "
                   f"decimal comma?)")
        else:
            why = ("it is the file's last line, shorter than the other rows and without a line break "
                   "after it (a copy cut short?)")
        quarantine.append(QuarantineRow(
            pid, source, table_name, "missing_metadata",
            f"patient {pid or '(no id)'}: {where} has {len(fields)} fields where its header has "
            f"{len(columns)}: {why}; the row is skipped: {fields}",
        ))
        if pid:
            ids.add(pid)
    return ids


# what stands where a patient folder belongs in a download not fully unpacked: the folder's
# archive (UK Biobank bulk files and per-patient shares come zipped), or a plain file of its name
ARCHIVE_SUFFIXES: tuple[str, ...] = ("", ".zip", ".tar", ".tar.gz", ".tgz", ".7z", ".rar")


def folder_stand_in(parent: Path, name: str) -> Path | None:
    """The file (not folder) at ``parent/name`` or ``parent/name.zip`` (any `ARCHIVE_SUFFIXES`),
    or a symbolic link at ``parent/name`` that leads nowhere (`is_dangling_link`), else None."""
    if is_dangling_link(parent / name):
        return parent / name
    for suffix in ARCHIVE_SUFFIXES:
        candidate = parent / f"{name}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def archive_stem(filename: str) -> str:
    """`filename` without an archive suffix (`ARCHIVE_SUFFIXES`; ``.tar.gz`` before ``.tar``):
    the patient folder a file found where folders are expected stands in for."""
    return next(filename[: len(filename) - len(x)] for x in ARCHIVE_SUFFIXES[::-1] if filename.lower().endswith(x))


def is_dangling_link(path: Path) -> bool:
    """A symbolic link whose target does not exist: a patient folder linked in from storage that
    was moved or is not mounted. A walk lists it among the files (it is no folder), so it read as
    a file in the folder's place, or the patient as having no folder at all."""
    return path.is_symlink() and not path.exists()


def stand_in_note(stand_in: Path) -> str:
    """Why a patient folder is missing when `folder_stand_in` found a file in its place."""
    if is_dangling_link(stand_in):
        return (f"; {stand_in} is a symbolic link to {os.readlink(stand_in)}, which does not exist (storage moved "
                f"or not mounted?): mount or restore its target, or replace the link with the patient folder")
    if any(stand_in.name.lower().endswith(suffix) for suffix in ARCHIVE_SUFFIXES if suffix):
        return f"; {stand_in} is an archive where the folder belongs: unpack it"
    return f"; {stand_in} is a file, not a folder: replace it with the patient folder"


def _same_folder(a: Path, b: Path) -> bool:
    """Whether `a` and `b` are one folder on disk (the same device and inode, links followed):
    unlike comparing resolved path strings, this also holds across a bind mount or a path spelled
    in another letter case on a case-insensitive file system. False when either cannot be looked at
    (then they stay two folders, reported, never merged)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def distinct_folders(pid: str, paths: list[Path]) -> list[Path]:
    """The folders a scan found for patient `pid` (`paths`, in scan order), each folder on disk
    once.

    A folder linked in next to itself (``A1 -> Training/Labeled/A1``), or linked twice, is found
    under two paths; it is one patient folder, read once, so only two *different* folders of one
    id are duplicates (`duplicate_folder_row`). Of one folder's paths, the one that is not itself
    a link is kept, so that where the patient sits in the release (its split) is where the folder
    really is; else the first. The paths left out are logged.

    A folder holding nothing but its namesake (``patient002/patient002/``) is read as that inner
    folder (`unwrapped`), so it too is one patient folder, not two."""
    kept: list[Path] = []
    for path in map(unwrapped, paths):
        same = next((i for i, known in enumerate(kept) if _same_folder(known, path)), None)
        if same is None:
            kept.append(path)
            continue
        if path == kept[same]:  # a wrapper and the folder it holds, both found by the scan
            continue
        real, alias = (path, kept[same]) if kept[same].is_symlink() and not path.is_symlink() else (kept[same], path)
        kept[same] = real
        log.info("patient %s: %s and %s are one folder (a symbolic link); the patient is read once, from %s",
                 pid, alias, real, real)
    return kept


def unwrapped(folder: Path) -> Path:
    """`folder`, or, when it holds nothing but one folder of its own name (ignoring case,
    surrounding spaces and `is_ignored_entry` leftovers), that folder, repeatedly.

    "Extract to patient002/" of a zip that already holds ``patient002/`` puts the patient's files
    in ``patient002/patient002/``: the outer folder is a wrapper, not a second patient folder (the
    outer one was used, its files reported missing, and the real folder quarantined as a
    duplicate). A link back to the folder itself is not followed round."""
    seen = {_folder_key(folder)}
    while True:
        try:
            entries = [p for p in folder.iterdir() if not is_ignored_entry(p.name)]
        except OSError:  # reported where the folder is read (`unreadable_folder_row`)
            return folder
        if len(entries) != 1 or not entries[0].is_dir() or _name_key(entries[0].name) != _name_key(folder.name):
            return folder
        if _folder_key(entries[0]) in seen:
            return folder
        log.info("%s holds only the folder %s: read as the patient folder", folder, entries[0])
        folder = entries[0]
        seen.add(_folder_key(folder))


def _name_key(name: str) -> str:
    return normalise_id(name).strip().casefold()


def duplicate_folder_row(pid: str, source: str, other: Path, first: Path) -> QuarantineRow:
    """The quarantine row of a second folder of one patient (the first one is used)."""
    return QuarantineRow(
        pid, source, str(other), "duplicate_id",
        f"patient {pid} has a second folder {other}; the first, {first}, is used and this one is quarantined",
    )


def missing_nifti(folder: Path, stem: str) -> tuple[Path, str]:
    """(the path to report, why it cannot be used) for a ``stem`` NIfTI `find_nifti` did not
    find: "does not exist", or, for a link whose target is gone (a moved or unmounted data
    folder), where the link points, or that a folder has the file's name, or that several
    files match it but for letter case, so the reader sees what to fix."""
    for suffix in NIFTI_SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_symlink():
            return candidate, f"is a symbolic link to {os.readlink(candidate)}, which is not a readable file"
        if candidate.is_dir():  # e.g. an archive unpacked into a folder of the file's name
            return candidate, "is a folder, not a NIfTI file"
        if os.path.lexists(candidate) and not candidate.is_file():  # "does not exist" would contradict `ls`
            return candidate, "exists but is not a regular file (a named pipe, socket or device file), so it cannot be read"
    variants = _case_variants(folder, stem)
    if len(variants) > 1:  # which one is meant is unknowable
        names = ", ".join(p.name for p in variants)
        return folder / f"{stem}.nii.gz", f"does not exist, and several files differ from it only in letter case ({names})"
    others = _other_formats(folder, stem)
    if others:
        names = ", ".join(p.name for p in others)
        # "sa.nii.gz.part", "sa.nii.gz.bak": a NIfTI under another name; "sa.mha", "sa.nrrd", "sa.hdr":
        # a cine or mask converted to, or left in, another format
        what = ("a NIfTI file under another name (a download not finished, or a copy?): check it and rename it"
                if any(".nii" in p.name.lower() for p in others) else "another format than NIfTI: convert it")
        return folder / f"{stem}.nii.gz", (f"does not exist, but {names} {'does' if len(others) == 1 else 'do'}: "
                                           f"{what} to {stem}.nii.gz")
    return folder / f"{stem}.nii.gz", "does not exist"


def _other_formats(folder: Path, stem: str) -> list[Path]:
    """The files in `folder` named ``stem.<another extension>`` (``sa.mha``, ``sa.nrrd``,
    ``sa.hdr``), in any letter case, sorted; none of them a NIfTI name."""
    key = normalise_id(stem).casefold()
    try:
        return sorted(p for p in folder.iterdir()
                      if not is_ignored_entry(p.name) and p.is_file()
                      and normalise_id(p.name).casefold().partition(".")[0] == key and "." in p.name
                      and not normalise_id(p.name).casefold().endswith(NIFTI_SUFFIXES))
    except OSError:  # the folder itself unreadable: reported as the file not found
        return []


def find_nifti_or_quarantine(folder: Path, stem: str, pid: str, source: str, reason: str, what: str,
                             problems: list) -> Path | None:
    """`find_nifti(folder, stem)`, or None with a `reason` row added to `problems` that names
    the expected ``stem.nii.gz`` as `what` (e.g. "cine")."""
    path = find_nifti(folder, stem)
    if path is None:
        expected, why = missing_nifti(folder, stem)
        problems.append(QuarantineRow(
            pid, source, str(expected), reason, f"patient {pid}: the {what} file {expected} {why}",
        ))
    return path
