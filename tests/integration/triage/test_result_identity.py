"""Result UIDs are globally unique: two appliances triaging copies of the same study make
disjoint UIDs (and device UIDs), and a restarted appliance keeps its identity, so a
retried job rebuilds the same objects."""

from __future__ import annotations

import pydicom

from appliance.config import load_settings
from appliance.db import open_database
from appliance.models.registry import ModelRegistry
from appliance.report import ResultUids
from appliance.parts import Parts
from scripts.harness import ApplianceProcess
from tests.helpers.dimse import queued_series, send, listener_with_head_ct
from tests.helpers.series import head_ct
from tests.helpers.sr import only


def appliance(folder, quick_packages):
    listener, settings, db, _ = listener_with_head_ct(folder / "data", quick_packages)
    return listener, settings, db


def test_two_appliances_make_disjoint_uids_and_a_restart_keeps_the_identity(tmp_path, quick_packages):
    study = head_ct(tmp_path / "ct", seed=21)
    boxes = [appliance(tmp_path / name, quick_packages) for name in ("a", "b")]
    try:
        sent, devices, workers = [], [], []
        for listener, settings, db in boxes:
            send(listener, study)
            queued_series(listener, 1)
            worker = Parts(settings).worker(db)
            assert worker.run_once()
            rows = db.conn.execute("SELECT path, sop_instance_uid FROM outbox").fetchall()
            assert len(rows) == 2
            sent.append({sop for _, sop in rows})
            sr = next(pydicom.dcmread(path) for path, _ in rows if pydicom.dcmread(path).Modality == "SR")
            devices.append(only(sr, "121012", "DCM").UID)
            workers.append((worker, sr))
        assert sent[0].isdisjoint(sent[1])
        assert devices[0] != devices[1]
        assert workers[0][0].outcome.writer.install_id != workers[1][0].outcome.writer.install_id

        (first, sr), (listener, settings, db) = workers[0], boxes[0]
        listener.stop()
        listener.start()  # the appliance restarts: same data folder, same identity
        again = Parts(settings).worker(open_database(settings.db_path))
        assert again.outcome.writer.install_id == first.outcome.writer.install_id
        assert again.outcome.writer.device_uid == devices[0]
        series = str(pydicom.dcmread(study[0], stop_before_pixels=True).SeriesInstanceUID)
        uids = ResultUids.derive(settings.report.uid_root, again.outcome.writer.install_id, series, 1)
        assert uids.sr_instance_uid == sr.SOPInstanceUID and {uids.sr_instance_uid, uids.sc_instance_uid} == sent[0]
    finally:
        for listener, _, _ in boxes:
            listener.stop()
