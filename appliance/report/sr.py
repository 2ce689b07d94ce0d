"""The triage decision as a Comprehensive 3D SR: a TID 1500 Measurement Report."""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from appliance.report.headers import MANUFACTURER, NOT_FOR_DIAGNOSTIC_USE, content_datetime, equipment, source_header, stamp
from appliance.report.records import ResultUids, TriageDecision
from appliance.errors import DicomError

SR_SERIES_NUMBER = 990
SR_SERIES_DESCRIPTION = f"AI TRIAGE - {NOT_FOR_DIAGNOSTIC_USE}"

#: Private coding scheme for the concepts DICOM has no code for; declared in the SR's
#: Coding Scheme Identification Sequence.
SCHEME = "99TRIAGE"
SCORE = hd.sr.CodedConcept("SCORE", SCHEME, "AI triage score")
OPERATING_POINT = hd.sr.CodedConcept("THRESHOLD", SCHEME, "AI triage operating point")
FLAGGED = hd.sr.CodedConcept("FLAG", SCHEME, "Flagged for priority review")

_NO_UNITS = codes.UCUM.NoUnits
# CID 100 Quantitative Diagnostic Imaging Procedures, by source Modality.
_PROCEDURES = {
    "CT": codes.LN.CTUnspecifiedBodyRegion,
    "DX": codes.LN.XRUnspecifiedBodyRegion,
    "CR": codes.LN.XRUnspecifiedBodyRegion,
}


def build_sr(source: Sequence[Dataset], decision: TriageDecision, uids: ResultUids, *, device_uid: str) -> hd.sr.Comprehensive3DSR:
    """Build the SR that reports ``decision`` about the series ``source``.

    The report (TID 1500) holds one measurement group (TID 1501) with the finding,
    a qualitative evaluation (finding present or absent), the score and the operating
    point (numeric, no units), whether the series was flagged, the algorithm
    identification (model id, version; sha256 and threshold as parameters) and a
    "not for diagnostic use" comment. Every source instance is referenced in the
    Current Requested Procedure Evidence Sequence (not one by one in the content
    tree, which would cost about a millisecond per instance).

    Parameters
    ----------
    source : sequence of pydicom.Dataset
        The instances of the source series; headers are enough (no pixel data needed).
    decision : TriageDecision
        What to report.
    uids : ResultUids
        ``sr_series_uid`` and ``sr_instance_uid`` are used.
    device_uid : str
        Device Observer UID of this appliance.

    Returns
    -------
    highdicom.sr.Comprehensive3DSR
        In the source study, patient and study attributes copied from the source.

    Raises
    ------
    ValueError
        If ``source`` is empty.
    DicomError
        If the source instances are not all of one series.
    """
    if not source:
        raise ValueError("no source instances")
    if len({(ds.StudyInstanceUID, ds.SeriesInstanceUID) for ds in source}) != 1:
        raise DicomError("source instances are not all of one series")
    evidence = [source_header(source[0]), *source[1:]]
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(device_uid),
        procedure_reported=_PROCEDURES.get(source[0].get("Modality"), codes.SCT.ImagingProcedure),
        imaging_measurements=[_measurement_group(decision, uids)],
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report[0],
        series_instance_uid=uids.sr_series_uid,
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=uids.sr_instance_uid,
        instance_number=1,
        is_complete=True,
        institution_name=source[0].get("InstitutionName") or None,
        series_description=SR_SERIES_DESCRIPTION,
        coding_schemes=[hd.coding_schemes.CodingSchemeIdentificationItem(
            designator=SCHEME, name="Triage Appliance concepts", responsible_organization=MANUFACTURER,
        )],
        **equipment(decision),
        **content_datetime(decision),
    )
    stamp(sr, decision)
    return sr


def _observation_context(device_uid: str) -> hd.sr.ObservationContext:
    return hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device,
            observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                uid=device_uid, name=MANUFACTURER, manufacturer_name=MANUFACTURER, model_name=MANUFACTURER,
            ),
        ),
    )


def _measurement_group(decision: TriageDecision, uids: ResultUids) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    finding = hd.sr.CodedConcept(*decision.finding_code)
    algorithm = hd.sr.AlgorithmIdentification(
        name=decision.model_id,
        version=decision.model_version,
        parameters=[f"sha256={decision.model_sha256}", f"threshold={decision.threshold:g}"],
        manufacturer=MANUFACTURER,
    )
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=generate_uid(entropy_srcs=[uids.sr_instance_uid, "tracking"]),
            identifier=f"{decision.task} triage",
        ),
        finding_type=finding,
        algorithm_id=algorithm,
        measurements=[
            hd.sr.Measurement(name=SCORE, value=decision.score, unit=_NO_UNITS),
            hd.sr.Measurement(name=OPERATING_POINT, value=decision.threshold, unit=_NO_UNITS),
        ],
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(finding, codes.SCT.Present if decision.flag else codes.SCT.Absent),
            hd.sr.QualitativeEvaluation(FLAGGED, codes.SCT.Yes if decision.flag else codes.SCT.No),
        ],
    )
    group[0].ContentSequence.append(hd.sr.TextContentItem(
        name=codes.DCM.Comment,
        value=f"{NOT_FOR_DIAGNOSTIC_USE}: AI triage result, not a diagnosis; a radiologist reads every study.",
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    ))
    return group
