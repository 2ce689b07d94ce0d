"""The result objects of one triaged series: built together, written under the results folder.

:func:`build_result_objects` is pure (headers, pixels and a decision in, datasets out);
:func:`write_objects` is the one place they reach the disk.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from appliance.report.capture import build_heatmap_capture
from appliance.report.content import INTRACRANIAL_HEMORRHAGE, ResultContent
from appliance.report.sr import build_sr
from appliance.report.uids import ResultUids, device_uid


def display_window(hu: np.ndarray, windows: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """The (centre, width) to show a key slice with: the model's first window, else the
    slice's own 0.5-99.5 percentile range (pure)."""
    if windows:
        return windows[0]
    low, high = np.percentile(hu, [0.5, 99.5])
    return float(low + high) / 2, float(max(high - low, 1.0))


def build_result_objects(
    headers: Sequence[Dataset],
    key: Dataset,
    key_pixels: np.ndarray,
    windows: Sequence[tuple[float, float]],
    heat: np.ndarray,
    content: ResultContent,
    uids: ResultUids,
    *,
    device_uid: str,
    key_frame: int = 0,
    predecessors: Sequence[Dataset] = (),
    procedure: tuple[str, str, str] | None = None,
) -> list[Dataset]:
    """The SR and the heat-map secondary capture of one decision; the SR references the
    capture and the key slice (see :func:`build_sr` for ``device_uid``, ``predecessors``
    and ``procedure``).

    Parameters
    ----------
    headers : sequence of Dataset
        Every source instance's header (the SR references them all).
    key, key_pixels : Dataset, ndarray
        The key slice's header and its rescaled pixels (HU for CT).
    windows : sequence of (centre, width)
        The model's windows; the first is used for display.
    heat : ndarray
        The heat map in [0, 1] over the key slice.
    """
    capture = build_heatmap_capture(key, key_pixels, display_window(key_pixels, windows), heat, content, uids)
    sr = build_sr(
        list(headers),
        content,
        uids,
        device_uid=device_uid,
        key=key,
        key_frame=key_frame,
        capture=capture,
        predecessors=predecessors,
        procedure=procedure,
    )
    return [sr, capture]


def write_objects(objects: Sequence[Dataset], folder: Path) -> list[tuple[Path, Dataset]]:
    """Write each object as ``folder/<SOP Instance UID>.dcm`` (DICOM file format)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for ds in objects:
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        written.append((path, ds))
    return written


def warm_up() -> None:
    """Build one throwaway SR and capture, so the first real series does not pay for
    highdicom's and Pillow's first use."""
    import datetime as dt

    source = Dataset()
    source.SOPClassUID, source.SOPInstanceUID = pydicom.uid.CTImageStorage, pydicom.uid.generate_uid()
    source.StudyInstanceUID, source.SeriesInstanceUID = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    source.Modality, source.Rows, source.Columns = "CT", 8, 8
    content = ResultContent(
        "warm-up",
        "warm-up",
        INTRACRANIAL_HEMORRHAGE,
        False,
        0.0,
        0.5,
        "warm-up",
        "0.0.0",
        "0" * 64,
        dt.datetime.now(dt.UTC),
    )
    build_result_objects(
        [source],
        source,
        np.zeros((8, 8), np.float32),
        [(40.0, 80.0)],
        np.zeros((2, 2), np.float32),
        content,
        ResultUids.from_key("warm-up"),
        device_uid=device_uid("2.25", "warm-up"),
    )
