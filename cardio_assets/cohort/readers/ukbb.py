"""UK Biobank cohorts in the ukbb_cardiac layout (and the built-in phantom, which copies it).

Layout::

    <root>/<eid>/sa.nii.gz          4D short-axis cine (x, y, z, t)
    <root>/<eid>/seg_sa_ED.nii.gz   3D labels at ED (frame 0): 1 LV, 2 MYO, 3 RV
    <root>/<eid>/seg_sa_ES.nii.gz   3D labels at ES

(``.nii`` is accepted where ``.nii.gz`` is absent.) ES is found later from the images
(the frame that agrees best with the ES mask) unless the table has an ``es_frame``
column (0-based).

The metadata table is a CSV (comma, tab or semicolon separated, or as a first ``sep=X`` line
says; UTF-8 with or without a byte-order mark, UTF-16 with or without one, else Windows-1252 or
Latin-1; CRLF or LF; decimal commas accepted; only the columns used are read; rows with nothing
in them skipped; a row Excel ended early, leaving out its trailing empty cells, read with them
blank; a stray separator ending every data row ignored; a workbook, .xlsx/.xls/.ods, refused naming the fix) with one row per participant. Columns by UK
Biobank field id, in any common export spelling (``31-0.0``, ``f.31.0.0``, ``p21003_i2``; the
Research Analysis Platform's ``participant.p21003_i2`` and its field titles,
``Age when attended assessment centre | Instance 2``):

- ``eid`` (also ``f.eid``, ``participant.eid``, ``Participant ID``), kept as a string (leading zeros
  survive; an eid Excel saved as a float, ``1234567.0``, or with its digits grouped, ``1,234,567``,
  ``1.234.567``, ``1 234 567``, is ``1234567``: `table_id`);
- sex, field 31 (0 female, 1 male; instance 0 preferred);
- age at imaging, field 21003, and BMI, field 21001, at instance 2 (the first imaging
  visit, when the cines were acquired). Another visit's value (age at recruitment is
  years earlier) is used only with ``instance_fallback`` (``CARDIO_UKBB_INSTANCE_FALLBACK``):
  instance 3, then 1, then 0, recorded per patient in ``extra["instance_fallback"]``.
  Without it a blank instance 2 is a blank (no cell), noted in
  ``extra["other_visit_only"]`` when another visit has a value;
- ICD-10 diagnoses, field 41270 (every column): HF when any code starts with ``I50``,
  otherwise healthy.

Or friendly names (matched ignoring case, spaces, underscores, hyphens and a unit such as
``(kg/m2)``: ``Patient ID``, ``BMI (kg/m2)``; `base.column_key`): ``eid, sex, age, bmi, icd10`` (sex female/male/F/M/0/1; codes joined
by ``;`` or ``|``), optionally ``diagnosis`` (hf/healthy) instead of ``icd10``. Field-id
columns win when both kinds are present. Optional ``es_frame`` / ``ed_frame`` (0-based).

Where the patient was scanned: ``site`` (or ``centre``), else field 54 at the imaging visit
(``54-2.0``; the imaging centres' codes become their names, Cheadle, Reading, Newcastle, Bristol);
``vendor`` (or ``manufacturer``), else ``Siemens``: every UK Biobank cine was acquired on a
Siemens 1.5 T MAGNETOM Aera, so a UK Biobank source without the column is one vendor, as it is
(the phantom, written in this layout, has both columns).

A blank value (empty, NA, ``?``, ``#N/A``...: `MISSING_TOKENS`) leaves that attribute None; a value that is present but
unparsable quarantines the patient as ``missing_metadata``. Duplicate ids follow
`split_duplicates` (identical copies: first kept; conflicting copies: all quarantined). Ids
and folder names are paired in Unicode NFC (`normalise_id`); two folders whose names differ
only in normalisation are one patient's (the first used, the other ``duplicate_id``).
"""

from __future__ import annotations

import csv
import os
import re
import shlex
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from cardio_assets.cohort.labels import IDENTITY_MAP
from cardio_assets.cohort.readers.base import (
    LEGACY_ENCODINGS,
    MaskRef,
    MetadataFormatError,
    PatientEntry,
    QuarantineRow,
    ScanResult,
    SourceMissingError,
    clean_header,
    code_text,
    column_key,
    distinct_folders,
    duplicate_folder_row,
    find_nifti_or_quarantine,
    folder_stand_in,
    is_blank,
    is_empty_row,
    is_ignored_entry,
    metadata_ref,
    normalise_id,
    pair_rows_with_folders,
    parse_frame,
    parse_number,
    parse_or_quarantine,
    parse_sex,
    quarantine_bad_rows,
    require_dir,
    require_file,
    require_text_table,
    stand_in_note,
    table_rows_by_id,
    unreadable_folder_row,
    utf16_without_bom,
)

IMAGE_STEM = "sa"
ED_MASK_STEM = "seg_sa_ED"
ES_MASK_STEM = "seg_sa_ES"

FIELD_SEX, FIELD_AGE, FIELD_BMI, FIELD_ICD10 = 31, 21003, 21001, 41270
FIELD_CENTRE = 54
IMAGING_CENTRES = {"11025": "Cheadle", "11026": "Reading", "11027": "Newcastle", "11028": "Bristol"}
UKB_VENDOR = "Siemens"  # 1.5 T MAGNETOM Aera at every imaging centre
IMAGING_INSTANCE = 2  # UK Biobank's first imaging visit, when the cines were acquired
HF_ICD10_PREFIX = "I50"

_FIELD_PATTERNS = (
    re.compile(r"^(?P<field>\d+)-(?P<instance>\d+)\.(?P<array>\d+)$"),  # 31-0.0
    re.compile(r"^f\.(?P<field>\d+)\.(?P<instance>\d+)\.(?P<array>\d+)$", re.IGNORECASE),  # f.31.0.0
    re.compile(r"^p(?P<field>\d+)(?:_i(?P<instance>\d+))?(?:_a(?P<array>\d+))?$", re.IGNORECASE),  # p21003_i2
)
# the Research Analysis Platform's table exporter: "participant.p31" (entity prefix), or field
# titles, "Body mass index (BMI) | Instance 2", "Diagnoses - ICD10" (an array in one column)
_ENTITY_PREFIX = "participant."
_TITLE = re.compile(r"^(?P<title>.+?)(?:\s*\|\s*Instance (?P<instance>\d+))?(?:\s*\|\s*Array (?P<array>\d+))?$", re.IGNORECASE)
_FIELD_TITLES = {
    "sex": FIELD_SEX,
    "age when attended assessment centre": FIELD_AGE,
    "body mass index (bmi)": FIELD_BMI,
    "diagnoses - icd10": FIELD_ICD10,
    "uk biobank assessment centre": FIELD_CENTRE,
}
_FRIENDLY = {
    "eid": ("eid", "f.eid", "participant.eid", "participant id", "patient_id", "id"),
    "sex": ("sex", "gender"),
    "age": ("age", "age_at_imaging"),
    "bmi": ("bmi",),
    "icd10": ("icd10", "icd_10", "icd10_codes"),
    "diagnosis": ("diagnosis",),
    "es_frame": ("es_frame",),
    "ed_frame": ("ed_frame",),
    "vendor": ("vendor", "manufacturer"),
    "site": ("site", "centre", "center"),
}
_CODE_SPLIT = re.compile(r"[;|,\s\[\]\"']+")
_HF_WORDS = {"hf": "hf", "heart failure": "hf", "1": "hf", "true": "hf", "yes": "hf",
             "healthy": "healthy", "control": "healthy", "0": "healthy", "false": "healthy",
             "no": "healthy"}


def _encoding(path: Path) -> str:
    """UTF-16 when the file starts with its byte-order mark, or holds UTF-16's zero bytes
    without one; else UTF-8 (a BOM dropped). `_read_csv` falls back to Windows-1252, then
    Latin-1, when the bytes are not UTF-8."""
    with open(path, "rb") as handle:
        head = handle.read(512)
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    return utf16_without_bom(head) or "utf-8-sig"


# Excel's separator hint: a first line "sep=;" before the header (written by some exports so
# that Excel in any locale splits the file; Excel reads it, and so do the readers)
_SEP_LINE = re.compile(r"sep=(.)")


def _sep_line(path: Path, encoding: str) -> str | None:
    """The separator a first line ``sep=X`` names, else None."""
    with open(path, encoding=encoding, errors="replace") as handle:
        found = _SEP_LINE.fullmatch(handle.readline().strip("\r\n"))
    return found[1] if found else None


def _delimiter(path: Path, encoding: str) -> str:
    """The separator a ``sep=X`` first line names, else the header line's most frequent of
    ``,``, tab and ``;`` (comma on a tie)."""
    named = _sep_line(path, encoding)
    if named:
        return named
    with open(path, encoding=encoding, errors="replace") as handle:
        header = handle.readline()
    counts = {sep: header.count(sep) for sep in (",", "\t", ";")}
    best = max(counts, key=lambda sep: (counts[sep], sep == ","))
    return best if counts[best] else ","


def _read_csv(path: Path, **options) -> pd.DataFrame:
    """pandas.read_csv with the file's encoding and separator; an old Windows export that
    is not UTF-8 is read as Windows-1252, else Latin-1 (`LEGACY_ENCODINGS`; every byte
    decodes in Latin-1), so an accent never stops a run."""
    encoding = _encoding(path)
    sep = _delimiter(path, encoding)
    if _sep_line(path, encoding):  # the hint line is not the header: skip it, and any rows asked
        skip = options.pop("skiprows", None) or (lambda line: False)
        options["skiprows"] = lambda line: line == 0 or skip(line)
    for attempt in (encoding, *LEGACY_ENCODINGS):
        try:
            return pd.read_csv(path, sep=sep, dtype=str, encoding=attempt, **options)
        except UnicodeDecodeError:
            continue
    raise AssertionError("unreachable: Latin-1 decodes every byte")


def read_metadata_table(path: Path, usecols=None) -> pd.DataFrame:
    """A CSV (or tab/semicolon-separated table) as strings: no NA conversion, so ids keep
    leading zeros and blanks stay "". Byte-order marks, CRLF line ends, Windows-1252 and
    Latin-1 text and a ``sep=X`` first line are handled. `usecols`: a list of column names, or a callable on a (stripped) name, to
    read only those columns.

    Empty fields past the header that *every* data row ends with (an exporter that ends each row
    with a separator, ``1,0,55,24,``) are read as absent (`_stray_trailing_fields`). A row with
    more fields than the header (an unquoted separator inside a value, such as the
    decimal comma of ``1,75`` in a comma-separated file), or a last line cut short, would put
    its values under the wrong columns: it is left out of the table and kept, as its list of
    fields, in ``table.attrs["bad_rows"]`` for the reader to quarantine (`quarantine_bad_rows`).
    Other rows with fewer fields are Excel's (it drops the separators of empty cells at the end
    of a row): their missing fields are blank. Such rows are found by a pass of Python's csv
    module over every field, since pandas, reading only `usecols`, takes a longer row's first
    fields without a word. A file that is a spreadsheet workbook, not text, is refused naming
    the fix (`require_text_table`); columns given twice with values that disagree are noted in
    ``table.attrs["conflicting_columns"]`` (`refuse_conflicting_columns`)."""
    require_text_table(path, "metadata table")
    if callable(usecols):
        keep = usecols
        usecols = lambda name: keep(clean_header(name))  # noqa: E731
    try:
        shapes = _row_shapes(path)
        bad_starts = {line - 1 for line in shapes.bad_lines}  # pandas counts file lines from 0
        with warnings.catch_warnings():
            # index_col=False: rows one field longer than the header (a stray trailing separator)
            # would otherwise make pandas take the first column, the id, for the row index. pandas
            # then drops each row's fields past the header and warns of lost data; `_row_shapes`
            # has checked that those fields are empty, and skips every row where they are not.
            warnings.simplefilter("ignore", pd.errors.ParserWarning)
            table = _read_csv(path, keep_default_na=False, na_filter=False, usecols=usecols, index_col=False,
                              skiprows=(lambda line: line in bad_starts) if bad_starts else None)
    except Exception as exc:  # pandas and csv raise several kinds on a malformed file
        raise MetadataFormatError(f"could not read the metadata table {path}: {exc}") from exc
    table.columns = [clean_header(c) for c in table.columns]
    table.attrs["bad_rows"] = shapes.bad_rows
    table.attrs["stray_trailing_fields"] = shapes.stray_trailing_fields
    table.attrs["conflicting_columns"] = shapes.conflicts
    table.attrs["bad_row_lines"] = shapes.bad_lines
    # the file line of each row, for messages (blank lines and quoted line breaks counted)
    table.attrs["lines"] = shapes.good_lines if len(shapes.good_lines) == len(table) else None
    return table


@dataclass
class _RowShapes:
    good_lines: list[int]  # 1-based file line where each row of the right length starts
    bad_lines: list[int]  # and where each of the others starts
    bad_rows: list[list[str]]  # the others' fields
    conflicts: dict[str, str] = field(default_factory=dict)  # column_key -> how its copies differ
    stray_trailing_fields: int = 0  # empty fields past the header every data row ends with


def _empty_tail(fields: list[str]) -> int:
    """How many of `fields`, counted from the end, are empty (or spaces)."""
    count = 0
    for value in reversed(fields):
        if value.strip():
            break
        count += 1
    return count


def _stray_trailing_fields(rows: list[list[str]], width: int) -> int:
    """How many empty fields past the header's `width` every data row ends with: 1 for an
    exporter that ends each data row, not the header, with a separator (``1,0,55,24,``); else 0.

    The whole table decides, never one row, because one row with an empty field too many is
    ambiguous: ``2,1,58,27,5,`` is as likely BMI 27,5 typed with a decimal comma (or another
    unquoted separator inside a value) before an empty last column, and dropping its empty field
    would read BMI 27 and an ICD-10 code "5" without a word. An exporter's stray separator ends
    *every* data row, which a decimal comma does not, so only a count every row (two at least:
    one row alone shows no habit) ends with is dropped; a row with more fields than that still
    has more fields than columns and is quarantined. Rows with nothing in them say nothing and
    are not counted."""
    rows = [row for row in rows if not is_empty_row(row)]
    if len(rows) < 2:
        return 0
    return min(_empty_tail(row[width:]) for row in rows)


def _ends_with_line_break(path: Path) -> bool:
    """Whether the file's last byte pair holds a line end (UTF-16's "\\n\\0" included)."""
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        handle.seek(max(0, handle.tell() - 2))
        tail = handle.read()
    return b"\n" in tail or b"\r" in tail


def _row_shapes(path: Path) -> _RowShapes:
    """Which rows have the header's field count, by Python's csv module (quotes respected).

    A row with fewer fields is read with its missing trailing fields blank, as pandas does: Excel
    leaves out the separators of empty cells at the end of a row (past its first rows), so a
    patient with no ICD-10 code, or no weight, ends early. Only a last line the file ends in
    without a line break is a line cut short (a copy interrupted): it counts as a bad row, as
    does every row with more fields than the header once the empty fields every row ends with
    (`_stray_trailing_fields`) are left out.

    Columns whose names share a `column_key` ("Age" twice, or "Age" and "age") are compared
    row by row; the first row where the copies differ is in `conflicts`."""
    encoding = _encoding(path)
    sep = _delimiter(path, encoding)
    complete = _ends_with_line_break(path)
    for attempt in (encoding, *LEGACY_ENCODINGS):  # as `_read_csv`
        try:
            with open(path, encoding=attempt, newline="") as handle:
                hint = 1 if _sep_line(path, encoding) else 0  # a "sep=;" line before the header
                for _ in range(hint):
                    handle.readline()
                rows = csv.reader(handle, delimiter=sep)
                header = next(rows, [])
                copies = _duplicated_columns(header)
                width = len(header)
                records: list[tuple[int, list[str]]] = []  # (start line, fields) of each row
                start = rows.line_num + 1 + hint
                ends_in_row = False  # the file's last line is a row, not a blank line
                for row in rows:
                    if row:  # a blank line is no row, for pandas either
                        records.append((start, row))
                    ends_in_row = bool(row)
                    start = rows.line_num + 1 + hint
                # a last line the file ends in without a line break may be cut short: it says
                # nothing about how the exporter ends its rows
                maybe_cut = records[-1] if records and ends_in_row and not complete else None
                shapes = _RowShapes([], [], [])
                stray = _stray_trailing_fields([record[1] for record in records if record is not maybe_cut], width)
                shapes.stray_trailing_fields = stray
                for record in records:
                    line, row = record
                    fields = row[: len(row) - min(stray, _empty_tail(row[width:]))]
                    if len(fields) > width or (record is maybe_cut and len(row) < width + stray):
                        shapes.bad_lines.append(line)  # too long, or the last line cut short
                        shapes.bad_rows.append(row)
                    else:
                        shapes.good_lines.append(line)
                        _note_conflicts(copies, header, fields, line, shapes.conflicts)
                return shapes
        except UnicodeDecodeError:
            continue
    raise AssertionError("unreachable: Latin-1 decodes every byte")


def _duplicated_columns(header: list[str]) -> dict[str, list[int]]:
    """Positions of the header names that share a `column_key` with another, by that key."""
    positions: dict[str, list[int]] = {}
    for i, name in enumerate(header):
        if clean_header(name):  # empty spreadsheet columns are not copies of one another
            positions.setdefault(column_key(name), []).append(i)
    return {key: found for key, found in positions.items() if len(found) > 1}


def _note_conflicts(copies: dict[str, list[int]], header: list[str], row: list[str], line: int,
                    conflicts: dict[str, str]) -> None:
    """Record in `conflicts` the first line where copies of a duplicated column differ."""
    for key, positions in copies.items():
        if key in conflicts:
            continue
        values = [normalise_id(row[i]).strip() if i < len(row) else "" for i in positions]
        if len(set(values)) > 1:
            names = " and ".join(f"{clean_header(header[i])!r} (column {i + 1})" for i in positions)
            conflicts[key] = f"{names} differ on line {line}: {', '.join(map(repr, values))}"


def refuse_conflicting_columns(table: pd.DataFrame, used, path: Path) -> None:
    """MetadataFormatError when a column a reader uses is in the table twice (the same name, or
    names differing only in case, spaces or a unit) and the copies disagree somewhere: pandas
    and the column matching would silently take one of them. Copies that agree on every row
    (an id column repeated by a join) are harmless."""
    conflicts = table.attrs.get("conflicting_columns", {})
    for key in sorted({column_key(c) for c in used if c}):
        if key in conflicts:
            raise MetadataFormatError(
                f"metadata table {path} holds a column it reads twice and the copies disagree: "
                f"{conflicts[key]}; which one holds the values is unknowable: delete or rename the wrong one")


def read_metadata_columns(path: Path) -> list[str]:
    """The header of a metadata table (cheap: reads no rows)."""
    require_text_table(path, "metadata table")
    try:
        table = _read_csv(path, nrows=0)
    except Exception as exc:  # pandas raises several kinds on a malformed file
        raise MetadataFormatError(f"could not read the metadata table {path}: {exc}") from exc
    return [clean_header(c) for c in table.columns]


def _field_columns(columns: list[str]) -> dict[int, list[tuple[int, int, str]]]:
    """{field id: [(instance, array, column)]} for the columns named by a field id or title."""
    fields: dict[int, list[tuple[int, int, str]]] = {}
    for col in columns:
        name = col[len(_ENTITY_PREFIX):] if col.lower().startswith(_ENTITY_PREFIX) else col
        found = next((m for m in (p.match(name) for p in _FIELD_PATTERNS) if m), None)
        field = int(found["field"]) if found else None
        if found is None:
            found = _TITLE.match(name)
            field = _FIELD_TITLES.get(found["title"].strip().lower()) if found else None
        if field is not None:
            fields.setdefault(field, []).append((int(found["instance"] or 0), int(found["array"] or 0), col))
    return fields


def _pick(fields: dict[int, list[tuple[int, int, str]]], field: int, instance: int) -> str | None:
    """The column of `field` at `instance` (array 0 first); None when that instance is absent."""
    cols = sorted(fields.get(field, []), key=lambda c: c[1])
    return next((col for inst, _, col in cols if inst == instance), None)


def _other_visits(fields: dict[int, list[tuple[int, int, str]]], field: int) -> tuple[str, ...]:
    """Columns of `field` at visits other than imaging (instance 2), in fallback order: the
    repeat imaging visit (3) first, then the earlier visits, latest first (1, 0)."""
    order = {3: 0, 1: 1, 0: 2}
    cols = [(order.get(inst, 3), arr, col) for inst, arr, col in fields.get(field, []) if inst != IMAGING_INSTANCE]
    return tuple(col for _, _, col in sorted(cols))


@dataclass(frozen=True)
class UkbColumns:
    eid: str
    sex: str
    age: str | None  # instance 2 (or friendly); None: no column holds age at imaging
    bmi: str | None
    icd10: tuple[str, ...]  # field 41270 columns, or the friendly icd10 column
    diagnosis: str | None  # a friendly hf/healthy column, used only when no ICD-10 columns
    es_frame: str | None
    ed_frame: str | None
    age_other_visits: tuple[str, ...] = ()  # 21003 at other instances, for the fallback
    bmi_other_visits: tuple[str, ...] = ()
    vendor: str | None = None
    site: str | None = None  # a site column, or field 54 at the imaging visit

    @classmethod
    def detect(cls, columns: list[str], path: Path) -> "UkbColumns":
        fields = _field_columns(columns)
        # matched as `column_key`: "Patient ID", "PatientID", "BMI (kg/m2)", "ES frame" (the first
        # of names sharing a key; `scan_ukbb` then refuses copies that disagree)
        by_key: dict[str, str] = {}
        for c in columns:
            by_key.setdefault(column_key(c), c)

        def friendly(name: str) -> str | None:
            return next((by_key[column_key(a)] for a in _FRIENDLY[name] if column_key(a) in by_key), None)

        sex_cols = fields.get(FIELD_SEX, [])  # sex is recorded once; any instance will do
        found = {
            "eid": friendly("eid"),
            "sex": _pick(fields, FIELD_SEX, 0) or (sex_cols[0][2] if sex_cols else None) or friendly("sex"),
            "age": _pick(fields, FIELD_AGE, IMAGING_INSTANCE) or friendly("age"),
            "bmi": _pick(fields, FIELD_BMI, IMAGING_INSTANCE) or friendly("bmi"),
        }
        other = {"age": _other_visits(fields, FIELD_AGE), "bmi": _other_visits(fields, FIELD_BMI)}
        icd = tuple(col for _, _, col in fields.get(FIELD_ICD10, []))
        if not icd and friendly("icd10"):
            icd = (friendly("icd10"),)
        diagnosis = None if icd else friendly("diagnosis")
        # age or BMI only at another visit is not missing: it reads as blank unless asked for
        missing = [k for k, v in found.items() if v is None and not other.get(k)]
        if not icd and diagnosis is None:
            missing.append("diagnosis")
        if missing:
            accepted = {
                "eid": "eid", "sex": "31-0.0 (any 31-*) or sex",
                "age": "21003-2.0 (any 21003-*) or age", "bmi": "21001-2.0 (any 21001-*) or bmi",
                "diagnosis": "41270-* (ICD-10) or icd10 or diagnosis",
            }
            wanted = "; ".join(f"{k}: {accepted[k]}" for k in missing)
            raise MetadataFormatError(
                f"metadata table {path} lacks columns for {', '.join(missing)} "
                f"(accepted: {wanted}); its columns are {list(columns)[:20]}"
            )
        return cls(found["eid"], found["sex"], found["age"], found["bmi"], icd, diagnosis,
                   friendly("es_frame"), friendly("ed_frame"), other["age"], other["bmi"],
                   friendly("vendor"), friendly("site") or _pick(fields, FIELD_CENTRE, IMAGING_INSTANCE))

    def used(self) -> set[str]:
        """Every column read from the table."""
        cols = {self.eid, self.sex, self.age, self.bmi, self.diagnosis, self.es_frame, self.ed_frame,
                self.vendor, self.site}
        return {c for c in cols if c} | set(self.icd10) | set(self.age_other_visits) | set(self.bmi_other_visits)


def icd10_codes(record: dict, columns: tuple[str, ...]) -> list[str]:
    codes: list[str] = []
    for col in columns:
        value = record.get(col, "")
        if is_blank(value):
            continue
        codes.extend(c.upper() for c in _CODE_SPLIT.split(str(value).strip()) if c)
    return codes


def _at_imaging(record: dict, column: str | None, other_visits: tuple[str, ...], what: str,
                fallback: bool, extra: dict) -> float | None:
    """A number at the imaging visit. Blank there: None, unless `fallback` allows another
    visit's value, which is then recorded in ``extra["instance_fallback"]``. A value seen
    only at another visit without the fallback is noted in ``extra["other_visit_only"]``."""
    value = parse_number(record[column], f"{what} ({column})") if column else None
    if value is not None:
        return value
    for other in other_visits:
        if is_blank(record[other]):
            continue
        if not fallback:
            extra.setdefault("other_visit_only", []).append(what)
            return None
        extra.setdefault("instance_fallback", {})[what] = other
        return parse_number(record[other], f"{what} ({other})")
    return None


def _parse_row(record: dict, cols: UkbColumns, fallback: bool = False) -> dict:
    """Attributes of one row; ValueError names the first unparsable value."""
    extra: dict = {}
    sex = parse_sex(record[cols.sex], f"sex ({cols.sex})")
    age = _at_imaging(record, cols.age, cols.age_other_visits, "age", fallback, extra)
    bmi = _at_imaging(record, cols.bmi, cols.bmi_other_visits, "bmi", fallback, extra)
    codes = icd10_codes(record, cols.icd10)
    if cols.icd10:
        diagnosis = "hf" if any(c.startswith(HF_ICD10_PREFIX) for c in codes) else "healthy"
    else:
        raw = str(record[cols.diagnosis]).strip().lower()
        if is_blank(raw):
            diagnosis = None
        elif raw in _HF_WORDS:
            diagnosis = _HF_WORDS[raw]
        else:
            raise ValueError(f"diagnosis {raw!r} is not hf or healthy")
    ed = parse_frame(record[cols.ed_frame], "ed_frame") if cols.ed_frame else None
    es = parse_frame(record[cols.es_frame], "es_frame") if cols.es_frame else None
    ed = 0 if ed is None else ed
    if es is not None and es == ed:
        raise ValueError(f"es_frame {es} equals ed_frame {ed}")
    if cols.icd10:
        extra["icd10"] = codes
    vendor = _text(record, cols.vendor) if cols.vendor else UKB_VENDOR
    site = code_text(record[cols.site]) if cols.site else None  # "11025.0" is centre 11025
    return dict(sex=sex, age=age, bmi=bmi, diagnosis=diagnosis, ed_frame=ed, es_frame=es,
                vendor=vendor, site=IMAGING_CENTRES.get(site, site) if site else None, extra=extra)


def _text(record: dict, column: str | None) -> str | None:
    """A column's text, stripped; None when there is no column or the value is blank."""
    if not column or is_blank(record[column]):
        return None
    return str(record[column]).strip()


def _find_files(folder: Path, pid: str, source: str, problems: list[QuarantineRow]) -> dict[str, Path | None]:
    """The cine and the ED and ES masks of a patient folder, by "image", "ed", "es"."""
    return {
        key: find_nifti_or_quarantine(folder, stem, pid, source, reason, what, problems)
        for key, stem, reason, what in (
            ("image", IMAGE_STEM, "missing_image", "cine"),
            ("ed", ED_MASK_STEM, "missing_ed_mask", "ED segmentation"),
            ("es", ES_MASK_STEM, "missing_es_mask", "ES segmentation"),
        )
    }


def _entry(pid: str, source: str, subset: str, files: dict[str, Path], attrs: dict, ref: str) -> PatientEntry:
    return PatientEntry(
        patient_id=pid,
        source=source,
        image_path=str(files["image"].absolute()),
        ed_mask=MaskRef(str(files["ed"].absolute())),
        es_mask=MaskRef(str(files["es"].absolute())),
        label_map=dict(IDENTITY_MAP),
        ed_frame=attrs["ed_frame"],
        es_frame=attrs["es_frame"],
        sex=attrs["sex"],
        age=attrs["age"],
        bmi=attrs["bmi"],
        diagnosis=attrs["diagnosis"],
        subset=subset,
        vendor=attrs["vendor"],
        site=attrs["site"],
        extra=attrs["extra"],
        metadata_ref=ref,
    )


def _patient_folders(root: Path, source: str, quarantine: list[QuarantineRow]) -> dict[str, Path]:
    """The patient folders directly in `root` by id (the name in NFC, `normalise_id`), the
    path as found. Hidden entries and ``__MACOSX`` are skipped (`is_ignored_entry`); of two
    folders whose names differ only in Unicode normalisation the first (sorted) is used and
    the other quarantined as ``duplicate_id``, unless they are one folder (a link to the
    other: `distinct_folders`)."""
    found: dict[str, list[Path]] = {}
    for path in sorted(root.iterdir()):
        if is_ignored_entry(path.name) or not path.is_dir():
            continue
        found.setdefault(normalise_id(path.name), []).append(path)
    folders: dict[str, Path] = {}
    for pid, paths in found.items():
        folders[pid], *others = distinct_folders(pid, paths)
        quarantine.extend(duplicate_folder_row(pid, source, other, folders[pid]) for other in others)
    return folders


# UK Biobank's bulk file name: <eid>_<field>_<instance>_<array>.zip, e.g. 1000015_20209_2_0.zip
# (field 20209: the short-axis cines, 20208: long-axis, as DICOM)
_UKB_BULK_ZIP = re.compile(r"\d+_\d+_\d+_\d+\.zip", re.IGNORECASE)


def _zipped_patients_note(root: Path) -> str:
    """What to do when `root` holds no patient folders but zip files: UK Biobank delivers bulk
    CMR as one zip per participant and field, and a download not yet unpacked read as an empty
    folder. Unpacking is left to the user (as for a zip where one patient folder belongs,
    `stand_in_note`): the reader never writes into the source. "" when `root` holds no zip."""
    zips = sorted(p for p in root.iterdir()
                  if not is_ignored_entry(p.name) and p.name.lower().endswith(".zip") and p.is_file())
    if not zips:
        return ""
    # the folder is named by the eid: the part of the file name before the first "_"
    command = f'cd {shlex.quote(str(root.resolve()))} && for f in *.zip; do d="${{f%.*}}"; unzip -q -n "$f" -d "${{d%%_*}}"; done'
    dicom = (" (UK Biobank's bulk zips hold DICOM, from which ukbb_cardiac's conversion and segmentation make "
             "this layout's sa.nii.gz, seg_sa_ED.nii.gz and seg_sa_ES.nii.gz)"
             if any(_UKB_BULK_ZIP.fullmatch(p.name) for p in zips) else "")
    # the command last, so that it can be copied as it stands
    return (f", but {len(zips)} zip file{'s' if len(zips) > 1 else ''} (such as {zips[0]}): the patients are "
            f"zipped{dicom}; unzip each into a folder named by its eid: {command}")


def _missing_folder(root: Path, pid: str) -> tuple[str, str]:
    """(the path to report, where the folder was looked for) for a row without a folder; a file
    or archive in its place is named (the folder was only ever looked for, so it read as absent)."""
    stand_in = folder_stand_in(root, pid)
    if stand_in is None:
        return str(root / pid), str(root / pid)
    return str(stand_in), f"{root / pid}{stand_in_note(stand_in)}"


def scan_ukbb(
    root: str | Path, metadata_csv: str | Path, *, subset: str = "study", source: str = "ukbb",
    instance_fallback: bool = False,
) -> ScanResult:
    """Entries and quarantine rows of a ukbb_cardiac-layout cohort (see module docstring).

    `instance_fallback`: where age or BMI is blank at the imaging visit (instance 2), take
    it from another visit (recorded per patient in ``extra["instance_fallback"]``).

    Raises SourceMissingError when `root` or `metadata_csv` is missing or `root` holds no
    patient folders, MetadataFormatError when the table lacks a required column.
    """
    if subset not in ("study", "heldout"):
        raise ValueError(f"subset must be 'study' or 'heldout', not {subset!r}")
    root = require_dir(root, f"{source} image folder (<eid>/sa.nii.gz)")
    csv = require_file(metadata_csv, f"{source} metadata table")
    quarantine: list[QuarantineRow] = []
    folders = _patient_folders(root, source, quarantine)
    if not folders:
        raise SourceMissingError(
            f"{source}: looked for patient folders <eid>/sa.nii.gz in {root.resolve()} "
            f"and found none{_zipped_patients_note(root)}"
        )
    header = read_metadata_columns(csv)
    cols = UkbColumns.detect(header, csv)
    # read only the columns used: a UK Biobank export can hold thousands
    wanted = cols.used()
    table = read_metadata_table(csv, usecols=lambda name: name in wanted)
    refuse_conflicting_columns(table, wanted, csv)
    table_name = str(csv)

    unsplit = quarantine_bad_rows(table, header, cols.eid, source, table_name, quarantine)
    kept, fully_duplicated = table_rows_by_id(table.to_dict("records"), cols.eid, "eid", source, table_name, quarantine,
                                              lines=table.attrs["lines"])
    entries: list[PatientEntry] = []
    for pid, line, record, folder in pair_rows_with_folders(
        kept, folders, fully_duplicated | unsplit, source, table_name,
        lambda pid: _missing_folder(root, pid), quarantine,
    ):
        unreadable = unreadable_folder_row(pid, source, folder)
        if unreadable:
            quarantine.append(unreadable)
            continue
        problems: list[QuarantineRow] = []
        attrs = parse_or_quarantine(lambda r: _parse_row(r, cols, instance_fallback), record, pid, line, source, table_name, problems)
        files = _find_files(folder, pid, source, problems)
        if problems:
            quarantine.extend(problems)
            continue
        entries.append(_entry(pid, source, subset, files, attrs, metadata_ref(table_name, line)))
    return ScanResult(entries, quarantine)
