"""Intake: a labelled DICOM folder checked before any training, and what it holds.

:func:`intake` reads every file of the folder through the box's own decode
(:func:`appliance.triage.decode.decode_instance`) and checks, collecting every problem
before it refuses (:class:`~training.errors.IntakeError`, naming the file or row of each):

- every file other than the label files is DICOM, decodes, and is of a modality and SOP
  class the spec's input takes;
- ``labels.csv`` matches the files: its header, its label and indication values, no
  series twice (missing rows: a series in the files that no row labels; missing files:
  a row no file belongs to), no SOP Instance UID in two files, no pixels stored twice
  under two UIDs (a copy would sit on both sides of a split);
- the spec's subgroup columns are in ``labels.csv``;
- with a split file: every labelled series has exactly one known split and no patient
  has series in two.

What it found is returned as an :class:`Intake`: the acquisition ranges (which become the
package's input constraints, :meth:`Intake.input_constraints`) and the dataset card's
counts (:meth:`Intake.card`). Patient identifiers are used to group series and never
appear in a message or the card.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from appliance.errors import DecodeError
from appliance.models.manifest import InputSpec
from appliance.triage.constraints import finer_spacing, header_number, patient_age
from appliance.triage.decode import decode_instance, read_header
from training.constraints import EXCLUDED_IMAGE_TYPES
from training.data.folder import scanner_of
from training.datasets import CONTENT_FILE, MANIFEST_FILE, content_sha256
from training.errors import IntakeError
from training.indication import Indication

#: Files of a labelled folder that are not DICOM.
LABEL_FILES = ("labels.csv", "slice_labels.csv", "slice_masks.npz", CONTENT_FILE, MANIFEST_FILE)
#: Splits a split file may name.
SPLIT_NAMES = ("train", "val", "calibration", "gate", "external")
#: Problems listed in one refusal; the rest are counted.
MAX_LISTED = 20
#: Folders with fewer files are read in this process.
PARALLEL_FROM = 64


@dataclass(frozen=True)
class FileFacts:
    """What intake needs of one DICOM file (picklable, from a worker process)."""

    path: str
    sop_uid: str
    series_uid: str
    study_uid: str
    patient: str  # the PatientID: grouping only, never shown
    modality: str
    sop_class: str
    scanner: str
    thickness_mm: float | None
    spacing_mm: float | None
    rows: int
    columns: int
    age_years: float | None
    view: str
    contrast: bool
    pixels_sha256: str


def inspect_file(path: Path, decode: bool = True) -> FileFacts | str:
    """The facts of one file, or what is wrong with it in words (names the file).

    ``decode``: decode the pixels through the box's decode and hash the decoded values;
    otherwise hash the stored Pixel Data as it is (a copy stored twice is still found,
    a re-encoded one is not), for datasets the build's own generator wrote.
    """
    try:
        header = read_header(path)
    except (InvalidDicomError, OSError) as exc:
        return f"{path}: not a DICOM file ({type(exc).__name__})"
    digest = hashlib.sha256()
    if decode:
        try:
            frames = decode_instance(path)
        except DecodeError as exc:
            return f"{path}: does not decode through the box's decode: {exc}"
        ds = frames[0].dataset
        for frame in frames:
            digest.update(f"{frame.pixels.dtype.str}{frame.pixels.shape}".encode())
            digest.update(np.ascontiguousarray(frame.pixels).tobytes())
    else:
        ds = header
        digest.update(pydicom.dcmread(path).get("PixelData", b"") or b"")
    missing = [k for k in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID") if not ds.get(k)]
    if missing:
        return f"{path}: no {', '.join(missing)}"
    agent = " ".join(str(ds.get(k) or "").strip().upper() for k in ("ContrastBolusAgent", "ContrastBolusRoute")).strip()
    age = patient_age(ds)
    return FileFacts(
        path=str(path), sop_uid=str(ds.SOPInstanceUID), series_uid=str(ds.SeriesInstanceUID),
        study_uid=str(ds.StudyInstanceUID), patient=str(ds.get("PatientID", "")), modality=str(ds.get("Modality", "")),
        sop_class=str(ds.get("SOPClassUID", "")), scanner=scanner_of(ds),
        thickness_mm=header_number(ds, "SliceThickness"), spacing_mm=finer_spacing(ds),
        rows=int(ds.get("Rows", 0) or 0), columns=int(ds.get("Columns", 0) or 0),
        age_years=age[0] if age is not None else None, view=str(ds.get("ViewPosition") or "").strip().upper(),
        contrast=bool(agent) and agent not in ("NONE", "NO", "NO CONTRAST"), pixels_sha256=digest.hexdigest())


def dicom_files(root: Path) -> list[Path]:
    """Every file under ``root`` but the label files and the input caches, in path order."""
    root = Path(root)
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name not in LABEL_FILES
                  and not p.relative_to(root).parts[0].startswith("inputs-"))


@dataclass
class Intake:
    """A labelled folder that passed intake: its series and what they cover."""

    root: Path
    sha256: str
    key: str  # the labels' key column
    rows: dict[str, dict[str, str]]  # labels.csv rows by key
    series: dict[str, list[FileFacts]]  # series UID -> its files
    indication_column: str
    subgroups: tuple[str, ...]
    splits: dict[str, str] = field(default_factory=dict)  # series UID -> split, from a split file

    def row_of(self, series_uid: str) -> dict[str, str]:
        files = self.series[series_uid]
        return self.rows[series_uid if self.key == "series_instance_uid" else files[0].study_uid]

    def indication(self, series_uid: str) -> str:
        row = self.row_of(series_uid)
        if row.get(self.indication_column):
            return Indication(row[self.indication_column]).value
        return (Indication.IN if row["label"] == "1" else Indication.NEGATIVE).value

    def ranges(self) -> dict[str, dict[str, float]]:
        """The acquisition ranges found: per file (thickness, spacing, rows, columns,
        age) and per series (images), ``{"min", "max"}`` each; a quantity no file gives
        is left out."""
        files = [f for fs in self.series.values() for f in fs]
        out = {}
        for name, values in (("slice_thickness_mm", [f.thickness_mm for f in files]),
                             ("pixel_spacing_mm", [f.spacing_mm for f in files]),
                             ("rows", [f.rows for f in files]), ("columns", [f.columns for f in files]),
                             ("slice_count", [len(fs) for fs in self.series.values()]),
                             ("patient_age_years", [f.age_years for f in files])):
            if values and all(v is not None for v in values):
                out[name] = {"min": round(float(min(values)), 6), "max": round(float(max(values)), 6)}  # type: ignore[type-var]
        return out

    def input_constraints(self, spec: InputSpec) -> dict:
        """The manifest's ``input_constraints``: the ranges found, the view positions
        found (radiographs), no contrast where no file had any, and the tags every file
        of this kind carries."""
        files = [f for fs in self.series.values() for f in fs]
        out: dict = {**self.ranges(), "excluded_image_types": EXCLUDED_IMAGE_TYPES}
        if spec.kind == "ct_slice":
            out["required_tags"] = ["ImagePositionPatient", "PixelSpacing", "SliceThickness"]
        else:
            out.pop("slice_thickness_mm", None)
            views = sorted({f.view for f in files})
            if all(views):
                out["view_positions"] = views
        if not any(f.contrast for f in files):
            out["contrast"] = "none"
        return out

    def card(self) -> dict:
        """The dataset card's figures (no patient identifier): counts of series per
        class, subgroup column, scanner, slice thickness and pixel spacing, and per split
        where a split file dealt them; files, series, patients; the content hash; the
        acquisition ranges."""
        uids = sorted(self.series)
        firsts = {u: self.series[u][0] for u in uids}

        def counts(values) -> dict[str, int]:
            return dict(sorted(Counter(values).items()))

        return {
            "content_sha256": self.sha256, "files": sum(len(v) for v in self.series.values()), "series": len(uids),
            "patients": len({f.patient for f in firsts.values()}),
            "indication": counts(self.indication(u) for u in uids),
            "subgroups": {c: counts(self.row_of(u).get(c, "") for u in uids) for c in self.subgroups},
            "scanner": counts(firsts[u].scanner for u in uids),
            "slice_thickness_mm": counts(_mm(firsts[u].thickness_mm) for u in uids),
            "pixel_spacing_mm": counts(_mm(firsts[u].spacing_mm, 2) for u in uids),
            "modality": counts(firsts[u].modality for u in uids),
            **({"split": counts(self.splits[u] for u in uids)} if self.splits else {}),
            "ranges": self.ranges(),
        }


def _mm(value: float | None, digits: int = 3) -> str:
    return "unknown" if value is None else f"{round(value, digits):g}"


def _refuse(root: Path, problems: list[str]) -> None:
    if problems:
        listed = problems[:MAX_LISTED]
        more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        raise IntakeError(f"{root}: {len(problems)} problem(s) found before training:\n  " + "\n  ".join(listed) + more)


def read_label_rows(path: Path, indication_column: str, subgroups: tuple[str, ...]) -> tuple[str, dict[str, dict[str, str]], dict[str, int], list[str]]:
    """``labels.csv`` read and checked: (key column, rows by key, row number by key, problems)."""
    problems: list[str] = []
    if not path.is_file():
        return "", {}, {}, [f"{path}: missing (a labels.csv with series_instance_uid or study_instance_uid, label)"]
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        key = header[0] if header else ""
        if key not in ("series_instance_uid", "study_instance_uid") or "label" not in header:
            return "", {}, {}, [f"{path}: header must start with series_instance_uid or study_instance_uid and have "
                                f"label, got {', '.join(header) or 'nothing'}"]
        for column in subgroups:
            if column not in header:
                problems.append(f"{path}: no column {column!r}, which the spec names as a subgroup")
        if indication_column != "indication" and indication_column not in header:
            problems.append(f"{path}: no column {indication_column!r}, which the spec names for the indication")
        rows: dict[str, dict[str, str]] = {}
        numbers: dict[str, int] = {}
        allowed = {i.value for i in Indication}
        for n, row in enumerate(reader, start=2):
            uid = (row.get(key) or "").strip()
            if not uid:
                problems.append(f"{path}:{n}: no {key}")
                continue
            if uid in rows:
                problems.append(f"{path}:{n}: {key} {uid} is labelled twice (first on line {numbers[uid]})")
                continue
            if row.get("label") not in ("0", "1"):
                problems.append(f"{path}:{n}: label must be 0 or 1, got {row.get('label')!r}")
            value = row.get(indication_column) or ""
            if value and value not in allowed:
                problems.append(f"{path}:{n}: {indication_column} must be one of {', '.join(sorted(allowed))}, "
                                f"got {value!r}")
            elif value and (value == Indication.NEGATIVE) != (row.get("label") == "0"):
                problems.append(f"{path}:{n}: {indication_column} {value} contradicts label {row.get('label')}")
            rows[uid], numbers[uid] = row, n
    return key, rows, numbers, problems


def read_split_file(path: Path) -> tuple[dict[str, str], dict[str, int], list[str]]:
    """A split file (``series_instance_uid,split``): (split by series, line by series, problems)."""
    problems: list[str] = []
    splits: dict[str, str] = {}
    lines: dict[str, int] = {}
    if not Path(path).is_file():
        return {}, {}, [f"{path}: split file missing"]
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if (reader.fieldnames or [])[:2] != ["series_instance_uid", "split"]:
            return {}, {}, [f"{path}: header must be series_instance_uid,split"]
        for n, row in enumerate(reader, start=2):
            uid, split = (row["series_instance_uid"] or "").strip(), (row["split"] or "").strip()
            if split not in SPLIT_NAMES:
                problems.append(f"{path}:{n}: split must be one of {', '.join(SPLIT_NAMES)}, got {split!r}")
            elif uid in splits:
                problems.append(f"{path}:{n}: series {uid} is dealt twice (first on line {lines[uid]})")
            else:
                splits[uid], lines[uid] = split, n
    return splits, lines, problems


def intake(root: Path, spec: InputSpec, *, indication_column: str = "indication", subgroups: tuple[str, ...] = (),
           split_file: Path | None = None, sha256: str | None = None, workers: int | None = None,
           decode: bool = True) -> Intake:
    """Check a labelled folder (see the module docstring) and return what it holds.

    ``sha256``: the folder's content hash when already known (a cached dataset's); else
    it is computed. ``decode=False`` skips the decode (see :func:`inspect_file`): for a
    dataset the build's own generator wrote, whose files the build decodes anyway.

    Raises
    ------
    IntakeError
        Every problem found, each naming its file or ``labels.csv`` line.
    """
    root = Path(root)
    if not root.is_dir():
        raise IntakeError(f"{root}: no such folder")
    key, rows, numbers, problems = read_label_rows(root / "labels.csv", indication_column, subgroups)
    _refuse(root, problems)
    paths = dicom_files(root)
    workers = workers or os.cpu_count() or 1
    if workers > 1 and len(paths) >= PARALLEL_FROM:
        with ProcessPoolExecutor(workers) as ex:
            inspected = list(ex.map(inspect_file, paths, [decode] * len(paths), chunksize=16))
    else:
        inspected = [inspect_file(p, decode) for p in paths]
    problems = [r for r in inspected if isinstance(r, str)]
    facts = [r for r in inspected if isinstance(r, FileFacts)]
    for f in facts:
        if f.modality not in spec.modalities:
            problems.append(f"{f.path}: modality {f.modality or 'missing'}, the spec takes {', '.join(spec.modalities)}")
        if spec.sop_class_uids and f.sop_class not in spec.sop_class_uids:
            problems.append(f"{f.path}: SOP class {f.sop_class or 'missing'} is not one the spec takes "
                            f"({', '.join(spec.sop_class_uids)})")
    by_sop: dict[str, str] = {}
    by_pixels: dict[str, FileFacts] = {}
    for f in facts:
        if f.sop_uid in by_sop:
            problems.append(f"{f.path}: SOP Instance UID {f.sop_uid} is also in {by_sop[f.sop_uid]}")
            continue
        by_sop[f.sop_uid] = f.path
        twin = by_pixels.get(f.pixels_sha256)
        if twin is not None:
            problems.append(f"{f.path}: the same pixels as {twin.path} under another UID "
                            f"(SOP {f.sop_uid} and {twin.sop_uid})")
        else:
            by_pixels[f.pixels_sha256] = f
    series: dict[str, list[FileFacts]] = defaultdict(list)
    for f in facts:
        label_key = f.series_uid if key == "series_instance_uid" else f.study_uid
        if label_key not in rows:
            problems.append(f"{f.path}: its {key.replace('_', ' ')} {label_key} has no row in labels.csv")
        else:
            series[f.series_uid].append(f)
    found = {(u if key == "series_instance_uid" else fs[0].study_uid) for u, fs in series.items()}
    for uid in sorted(set(rows) - found, key=lambda u: numbers[u]):
        problems.append(f"{root / 'labels.csv'}:{numbers[uid]}: {key} {uid} has no DICOM file in the folder")
    if not rows and not problems:
        problems.append(f"{root / 'labels.csv'}: no rows")
    splits: dict[str, str] = {}
    if split_file is not None:
        splits, lines, split_problems = read_split_file(split_file)
        problems += split_problems
        for uid in sorted(series):
            if uid not in splits:
                problems.append(f"{split_file}: series {uid} (labelled in labels.csv) has no split")
        for uid in sorted(set(splits) - set(series)):
            problems.append(f"{split_file}:{lines[uid]}: series {uid} is not a labelled series of the folder")
        problems += straddling({u: fs[0].patient for u, fs in series.items() if u in splits}, splits, lines, split_file)
    _refuse(root, problems)
    return Intake(root, sha256 or content_sha256(root), key, rows, dict(series), indication_column, tuple(subgroups),
                  {u: s for u, s in splits.items() if u in series})


def straddling(patient_of: dict[str, str], splits: dict[str, str], lines: dict[str, int], where: Path | str) -> list[str]:
    """Problems for every patient whose series sit in two splits, naming the series and
    lines, never the patient (pure)."""
    first: dict[str, str] = {}
    problems = []
    for uid in sorted(patient_of, key=lambda u: lines.get(u, 0)):
        patient = patient_of[uid]
        if patient in first and splits[first[patient]] != splits[uid]:
            other = first[patient]
            problems.append(f"{where}:{lines.get(uid, '?')}: series {uid} ({splits[uid]}) and series {other} "
                            f"(line {lines.get(other, '?')}, {splits[other]}) are the same patient's: a patient "
                            "must stay in one split")
        first.setdefault(patient, uid)
    return problems


def shared_patients(dev: Intake, sealed_patients: set[str]) -> list[str]:
    """Development series whose patient is also in the sealed set (pure)."""
    return sorted(u for u, fs in dev.series.items() if fs[0].patient in sealed_patients)


def patients_of(root: Path) -> set[str]:
    """The PatientIDs of a folder's DICOM files, from headers only (no pixel is read)."""
    out = set()
    for path in dicom_files(root):
        try:
            out.add(str(read_header(path).get("PatientID", "")))
        except (InvalidDicomError, OSError):
            continue
    return out


def card_markdown(name: str, card: dict) -> str:
    """The dataset card as Markdown (pure)."""
    lines = [f"# Dataset card: {name}", "",
             f"Content sha256 `{card['content_sha256']}` (sha256 over `sha256  path` of every file).", "",
             f"{card['series']} series in {card['files']} files from {card['patients']} patients.", ""]

    def table(title: str, counts: dict[str, int]) -> None:
        lines.extend([f"## {title}", "", "| value | series |", "|---|---|"])
        lines.extend(f"| {k or '(empty)'} | {v} |" for k, v in counts.items())
        lines.append("")

    table("Class", card["indication"])
    for column, counts in card["subgroups"].items():
        table(f"Subgroup: {column}", counts)
    for title, name_ in (("Scanner", "scanner"), ("Modality", "modality"), ("Slice thickness (mm)", "slice_thickness_mm"),
                         ("Pixel spacing (mm, finer axis)", "pixel_spacing_mm"), ("Split", "split")):
        if name_ in card:
            table(title, card[name_])
    lines.extend(["## Acquisition ranges (the package's input constraints)", "", "| quantity | min | max |",
                  "|---|---|---|"])
    lines.extend(f"| {k} | {v['min']:g} | {v['max']:g} |" for k, v in card["ranges"].items())
    return "\n".join(lines) + "\n"


def write_card(folder: Path, name: str, card: dict) -> list[Path]:
    """``DATASET_CARD.md`` and ``dataset.json`` in ``folder``; returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    md, js = folder / "DATASET_CARD.md", folder / "dataset.json"
    md.write_text(card_markdown(name, card))
    js.write_text(json.dumps(card, indent=2, sort_keys=True))
    return [md, js]
