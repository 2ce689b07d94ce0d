"""The study page heads each series with its SeriesNumber, as PACS viewers do, not with
its place on the page (issue 26: "Series 1" when SeriesNumber is 2)."""

from __future__ import annotations

from pydicom.uid import generate_uid

from appliance.db import open_database
from appliance.receive.index import IngestIndex
from appliance.web.studies import series_number
from tests.helpers.boxes import arrived
from tests.helpers.series import ct_dataset


def _store(tmp_path, index, series: str, number: int | None) -> None:
    ds = ct_dataset(generate_uid(), series, 0)
    if number is not None:
        ds.SeriesNumber = number
    path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    index.record(arrived(ds, path, "CT_1", "assoc", "CT HEAD"))


def test_the_series_number_is_read_from_a_stored_instance(tmp_path):
    db = open_database(tmp_path / "appliance.db")
    index = IngestIndex(db)
    numbered, unnumbered = generate_uid(), generate_uid()
    _store(tmp_path, index, numbered, 2)
    _store(tmp_path, index, unnumbered, None)
    assert series_number(db.conn, numbered) == 2
    assert series_number(db.conn, unnumbered) is None  # the heading then names no number
    assert series_number(db.conn, generate_uid()) is None  # nothing stored


def test_a_series_whose_files_are_gone_has_no_number(tmp_path):
    db = open_database(tmp_path / "appliance.db")
    series = generate_uid()
    _store(tmp_path, IngestIndex(db), series, 4)
    for path in tmp_path.glob("*.dcm"):
        path.unlink()
    assert series_number(db.conn, series) is None
