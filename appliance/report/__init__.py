"""The DICOM objects sent back to PACS: the result objects of a triaged series (an SR
and a heat-map capture) and the "not analysed" notice of a claimed series without one.

Pure functions: they take headers, pixels and what the objects say
(:class:`ResultContent`, :class:`NoticeContent`) and return datasets; only
:func:`write_objects` writes, and nothing is sent here. Their UIDs are derived
(:mod:`appliance.report.uids`).

- :func:`build_sr`: a Comprehensive 3D SR (TID 1500 Measurement Report): flagged for
  priority review (the finding as the reason) or not flagged (does not exclude the
  finding), the score against the operating point, the model and the variant that ran,
  the key slice, the capture, the source instances and any SR it replaces.
- :func:`build_notice`: the "not analysed" notice, an SR with the same header, no
  finding, and the reason in words and as a code.
- :func:`build_heatmap_capture`: an RGB Secondary Capture of the key slice with the heat
  map overlaid and "NOT FOR DIAGNOSTIC USE" burned in.
- :func:`build_result_objects` builds the SR and the capture from one
  :class:`ResultContent`; :func:`write_objects` is the one place objects are written
  (under the results folder).

Both are in the source study and are labelled not for diagnostic use.
"""

from appliance.report.capture import SC_SERIES_NUMBER, build_heatmap_capture
from appliance.report.content import (
    ANALYSIS_FAILED,
    ANALYSIS_TIMED_OUT,
    INTRACRANIAL_HEMORRHAGE,
    OUTSIDE_INPUT_CONSTRAINTS,
    PNEUMOTHORAX,
    PULMONARY_NODULE,
    Code,
    NoticeContent,
    ResultContent,
    finding_code,
)
from appliance.report.headers import MANUFACTURER, NOT_FOR_DIAGNOSTIC_USE
from appliance.report.objects import build_result_objects, warm_up, write_objects
from appliance.report.sr import (
    FLAG_REASON,
    FLAGGED,
    NOT_ANALYSED_REASON,
    NOTICE_SERIES_NUMBER,
    OPERATING_POINT,
    SCORE,
    SR_SERIES_NUMBER,
    TRIAGE_STATUS,
    build_notice,
    build_sr,
    flag_wording,
)
from appliance.report.uids import UUID_ROOT, ResultUids, check_uid_root, derive_uid, device_uid

__all__ = [
    "ANALYSIS_FAILED",
    "ANALYSIS_TIMED_OUT",
    "Code",
    "FLAGGED",
    "FLAG_REASON",
    "INTRACRANIAL_HEMORRHAGE",
    "MANUFACTURER",
    "NOTICE_SERIES_NUMBER",
    "NOT_ANALYSED_REASON",
    "NOT_FOR_DIAGNOSTIC_USE",
    "OPERATING_POINT",
    "OUTSIDE_INPUT_CONSTRAINTS",
    "PNEUMOTHORAX",
    "PULMONARY_NODULE",
    "SCORE",
    "SC_SERIES_NUMBER",
    "SR_SERIES_NUMBER",
    "TRIAGE_STATUS",
    "UUID_ROOT",
    "NoticeContent",
    "ResultUids",
    "ResultContent",
    "build_heatmap_capture",
    "build_notice",
    "build_result_objects",
    "build_sr",
    "check_uid_root",
    "derive_uid",
    "device_uid",
    "finding_code",
    "flag_wording",
    "warm_up",
    "write_objects",
]
