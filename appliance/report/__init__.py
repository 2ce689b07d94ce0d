"""The DICOM result objects sent back to PACS for one triaged series.

Pure functions: they take headers, pixels and a :class:`TriageDecision` and return
datasets; only :func:`write_objects` writes, and nothing is sent here.

- :func:`build_sr`: a Comprehensive 3D SR (TID 1500 Measurement Report) stating the
  finding present or absent, the score, the operating point, the flag, the model and
  the source instances.
- :func:`build_heatmap_capture`: an RGB Secondary Capture of the key slice with the heat
  map overlaid and "NOT FOR DIAGNOSTIC USE" burned in.
- :func:`build_result_objects` builds both for one decision; :func:`write_objects` is the
  one place they are written (under the results folder).

Both are in the source study and are labelled not for diagnostic use.
"""

from appliance.report.capture import SC_SERIES_NUMBER, build_heatmap_capture
from appliance.report.headers import MANUFACTURER, NOT_FOR_DIAGNOSTIC_USE
from appliance.report.records import (
    INTRACRANIAL_HEMORRHAGE,
    PNEUMOTHORAX,
    PULMONARY_NODULE,
    ResultUids,
    TriageDecision,
    finding_code,
)
from appliance.report.objects import build_result_objects, warm_up, write_objects
from appliance.report.sr import FLAGGED, OPERATING_POINT, SCORE, SR_SERIES_NUMBER, build_sr

__all__ = [
    "FLAGGED", "INTRACRANIAL_HEMORRHAGE", "MANUFACTURER", "NOT_FOR_DIAGNOSTIC_USE", "OPERATING_POINT",
    "PNEUMOTHORAX", "PULMONARY_NODULE", "SCORE", "SC_SERIES_NUMBER", "SR_SERIES_NUMBER", "ResultUids", "TriageDecision",
    "build_heatmap_capture", "build_result_objects", "build_sr", "finding_code", "warm_up", "write_objects",
]
