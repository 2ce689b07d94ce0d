"""The triage content, and the "not analysed" notice, as Comprehensive 3D SR (TID 1500).

Wording follows the intended use: the appliance flags series for priority review; it
never states that a finding is absent. A flagged series' SR gives the finding as the
reason for the flag; an unflagged one says "not flagged; does not exclude <finding>"
and carries no finding at all. The score is a score compared with an operating point,
never presented as a probability.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from appliance import __version__, formats
from appliance.errors import DicomError
from appliance.report.content import NoticeContent, ResultContent
from appliance.report.headers import (
    MANUFACTURER,
    NOT_FOR_DIAGNOSTIC_USE,
    content_datetime,
    equipment,
    source_header,
    stamp,
)
from appliance.report.uids import ResultUids, derive_uid

SR_SERIES_NUMBER = 990
NOTICE_SERIES_NUMBER = 992
SR_SERIES_DESCRIPTION = f"AI TRIAGE - {NOT_FOR_DIAGNOSTIC_USE}"
NOTICE_SERIES_DESCRIPTION = f"AI TRIAGE NOT ANALYSED - {NOT_FOR_DIAGNOSTIC_USE}"

#: Private coding scheme for the concepts DICOM and SNOMED CT have no code for; declared
#: in every SR's Coding Scheme Identification Sequence and in docs/conformance.md.
SCHEME = "99TRIAGE"
FLAGGED = hd.sr.CodedConcept("FLAG", SCHEME, "Flagged for priority review")
FLAG_REASON = hd.sr.CodedConcept("FLAGREASON", SCHEME, "Reason for priority review flag")
TRIAGE_STATUS = hd.sr.CodedConcept("STATUS", SCHEME, "AI triage status")
NOT_ANALYSED_REASON = hd.sr.CodedConcept("NAREASON", SCHEME, "Reason not analysed")
#: Real codes: the score (SNOMED CT "Score"), the operating point (DCM "CAD Operating
#: Point"), "Not performed" (SNOMED CT), the contributing equipment's purpose (DCM
#: "Processing Equipment", CID 7005: the processing algorithm of IHE AI Results).
SCORE = hd.sr.CodedConcept("246262008", "SCT", "Score")
OPERATING_POINT = hd.sr.CodedConcept("111071", "DCM", "CAD Operating Point")
NOT_PERFORMED = hd.sr.CodedConcept("262008008", "SCT", "Not performed")
PROCESSING_EQUIPMENT = hd.sr.CodedConcept("109102", "DCM", "Processing Equipment")
#: How the SR references the heat-map capture (the key slice is the measurement group's
#: source image, highdicom's "Source of Measurement").
ILLUSTRATION = hd.sr.CodedConcept("121200", "DCM", "Illustration of ROI")
#: The model package's sha256: which bytes ran, beside the algorithm's name and version
#: (not one of its parameters).
PACKAGE_SHA256 = hd.sr.CodedConcept("PKGSHA256", SCHEME, "Model package SHA-256")
#: Every text the appliance writes is British English ("analysed", "haemorrhage").
LANGUAGE = hd.sr.LanguageOfContentItemAndDescendants(hd.sr.CodedConcept("en-GB", "RFC5646", "English (United Kingdom)"))

_NO_UNITS = codes.UCUM.NoUnits
#: Procedure reported when the routing rule names none: CID 100 by source Modality.
_PROCEDURES = {
    "CT": codes.LN.CTUnspecifiedBodyRegion,
    "DX": codes.LN.XRUnspecifiedBodyRegion,
    "CR": codes.LN.XRUnspecifiedBodyRegion,
}


def flag_wording(content: ResultContent) -> str:
    """The verdict in words, as the SR and the capture say it (pure)."""
    finding = formats.finding(content.finding.lower())
    score, threshold = formats.score(content.score), formats.score(content.threshold)
    if content.flag:
        return (
            f"Flagged for priority review; reason for the flag: suspected {finding} "
            f"(score {score} at or above threshold {threshold})"
        )
    return f"Not flagged; does not exclude {finding} (score {score} below threshold {threshold})"


def build_sr(
    source: Sequence[Dataset],
    content: ResultContent,
    uids: ResultUids,
    *,
    device_uid: str,
    key: Dataset | None = None,
    key_frame: int | None = None,
    capture: Dataset | None = None,
    predecessors: Sequence[Dataset] = (),
    procedure: tuple[str, str, str] | None = None,
) -> hd.sr.Comprehensive3DSR:
    """Build the SR that reports ``content`` about the series ``source``.

    The report (TID 1500) holds one measurement group (TID 1501): the algorithm
    identification (model id and version; the threshold and the variant that ran as
    parameters), the model package's sha256 (a text item of its own), the score and the
    operating point (numeric, no units), "Flagged for
    priority review" yes or no, and the wording of :func:`flag_wording`. A flagged group
    has the finding as its Finding and as the reason for the flag; an unflagged one names
    no finding. The key slice is the group's source image, and the heat-map capture is
    referenced as an illustration. Every source instance is in the Current Requested
    Procedure Evidence Sequence.

    Parameters
    ----------
    source : sequence of pydicom.Dataset
        The instances of the source series; headers are enough (no pixel data needed).
    content : ResultContent
        What to report.
    uids : ResultUids
        ``sr_series_uid`` and ``sr_instance_uid`` are used.
    device_uid : str
        Device Observer UID of this appliance (also the contributing equipment's).
    key, key_frame : pydicom.Dataset and int, optional
        The key slice's header (one of ``source``) and its frame (0-based) when
        multi-frame.
    capture : pydicom.Dataset, optional
        The heat-map Secondary Capture of the same content.
    predecessors : sequence of pydicom.Dataset
        Earlier SRs about the same series that this one replaces (Predecessor Documents).
    procedure : (value, scheme, meaning), optional
        The routing rule's procedure code; else one by the source Modality.

    Raises
    ------
    ValueError
        If ``source`` is empty.
    DicomError
        If the source instances are not all of one series.
    """
    _check_source(source)
    images = []
    if key is not None:
        frames = [key_frame + 1] if key_frame is not None and int(key.get("NumberOfFrames", 1) or 1) > 1 else None
        images.append(hd.sr.SourceImageForMeasurementGroup(key.SOPClassUID, key.SOPInstanceUID, frames))
    group = _measurement_group(content, uids, images)
    if capture is not None:
        group[0].ContentSequence.append(
            hd.sr.ImageContentItem(
                name=ILLUSTRATION,
                referenced_sop_class_uid=capture.SOPClassUID,
                referenced_sop_instance_uid=capture.SOPInstanceUID,
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
        )
    extra_evidence = [capture] if capture is not None else []
    return _document(
        source,
        group,
        content,
        uids.sr_series_uid,
        uids.sr_instance_uid,
        SR_SERIES_NUMBER,
        SR_SERIES_DESCRIPTION,
        device_uid,
        procedure,
        extra_evidence,
        predecessors,
    )


def build_notice(
    source: Sequence[Dataset],
    notice: NoticeContent,
    uids: ResultUids,
    *,
    device_uid: str,
    procedure: tuple[str, str, str] | None = None,
) -> hd.sr.Comprehensive3DSR:
    """Build the "not analysed" notice for a series a routing rule claimed but that got
    no triage result: the same header as a result SR, no finding, the status "Not
    performed", the reason as a code and in plain words.

    ``uids.notice_series_uid`` and ``uids.notice_instance_uid`` are used; see
    :func:`build_sr` for the rest.
    """
    _check_source(source)
    tracking = hd.sr.TrackingIdentifier(
        uid=derive_uid("2.25", uids.notice_instance_uid, "tracking"), identifier=f"{notice.task} triage"[:64]
    )
    algorithm = None
    if notice.model_version:
        algorithm = hd.sr.AlgorithmIdentification(
            name=notice.model_id, version=notice.model_version, manufacturer=MANUFACTURER
        )
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking,
        algorithm_id=algorithm,
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(TRIAGE_STATUS, NOT_PERFORMED),
            hd.sr.QualitativeEvaluation(NOT_ANALYSED_REASON, hd.sr.CodedConcept(*notice.reason_code)),
        ],
    )
    assessed = f"; {formats.finding(notice.finding.lower())} was not assessed" if notice.finding else ""
    _comment(
        group, f"NOT ANALYSED by AI triage: {notice.reason}{assessed}. This series was not triaged; read it as usual."
    )
    _comment(group, f"{NOT_FOR_DIAGNOSTIC_USE}: AI triage notice, not a diagnosis.")
    return _document(
        source,
        group,
        notice,
        uids.notice_series_uid,
        uids.notice_instance_uid,
        NOTICE_SERIES_NUMBER,
        NOTICE_SERIES_DESCRIPTION,
        device_uid,
        procedure,
        [],
        (),
    )


def _check_source(source: Sequence[Dataset]) -> None:
    if not source:
        raise ValueError("no source instances")
    if len({(ds.StudyInstanceUID, ds.SeriesInstanceUID) for ds in source}) != 1:
        raise DicomError("source instances are not all of one series")


def _document(
    source: Sequence[Dataset],
    group: hd.sr.MeasurementsAndQualitativeEvaluations,
    what: ResultContent | NoticeContent,
    series_uid: str,
    instance_uid: str,
    series_number: int,
    description: str,
    device_uid: str,
    procedure: tuple[str, str, str] | None,
    extra_evidence: list[Dataset],
    predecessors: Sequence[Dataset],
) -> hd.sr.Comprehensive3DSR:
    evidence = [source_header(source[0]), *source[1:], *extra_evidence]
    procedure_code = (
        hd.sr.CodedConcept(*procedure)
        if procedure
        else _PROCEDURES.get(source[0].get("Modality"), codes.SCT.ImagingProcedure)
    )
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(device_uid),
        procedure_reported=procedure_code,
        imaging_measurements=[group],
        language_of_content_item_and_descendants=LANGUAGE,
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report[0],
        series_instance_uid=series_uid,
        series_number=series_number,
        sop_instance_uid=instance_uid,
        instance_number=1,
        is_complete=True,
        institution_name=source[0].get("InstitutionName") or None,
        series_description=description,
        previous_versions=list(predecessors) or None,
        coding_schemes=[
            hd.coding_schemes.CodingSchemeIdentificationItem(
                designator=SCHEME,
                name="Triage Appliance concepts",
                responsible_organization=MANUFACTURER,
            )
        ],
        **equipment(what),
        **content_datetime(what),
    )
    sr.ContributingEquipmentSequence.append(_processing_algorithm(what, device_uid))  # type: ignore[arg-type]
    stamp(sr, what)
    return sr


def _processing_algorithm(what: ResultContent | NoticeContent, device_uid: str) -> Dataset:
    """The Contributing Equipment item of IHE AI Results: the algorithm that processed the series."""
    item = Dataset()
    item.Manufacturer = MANUFACTURER
    item.ManufacturerModelName = what.model_id
    item.SoftwareVersions = [__version__, what.model_version] if what.model_version else [__version__]
    item.DeviceUID = device_uid
    item.PurposeOfReferenceCodeSequence = [PROCESSING_EQUIPMENT]
    variant = getattr(what, "variant", "")
    item.ContributionDescription = (  # ST: up to 1024 characters, so the variant is never cut
        f"Processing Algorithm: {what.model_id} {what.model_version}" + (f" on {variant}" if variant else "")
    ).strip()[:1024]
    return item


def _observation_context(device_uid: str) -> hd.sr.ObservationContext:
    return hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device,
            observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                uid=device_uid,
                name=MANUFACTURER,
                manufacturer_name=MANUFACTURER,
                model_name=MANUFACTURER,
            ),
        ),
    )


def _comment(group: hd.sr.MeasurementsAndQualitativeEvaluations, text: str) -> None:
    group[0].ContentSequence.append(
        hd.sr.TextContentItem(
            name=codes.DCM.Comment, value=text, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
        )
    )


def _measurement_group(
    content: ResultContent, uids: ResultUids, images: list[hd.sr.SourceImageForMeasurementGroup]
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    finding = hd.sr.CodedConcept(*content.finding_code)
    parameters = [f"threshold={formats.score(content.threshold)}"]
    if content.variant:
        parameters.append(f"variant={content.variant}")
    algorithm = hd.sr.AlgorithmIdentification(
        name=content.model_id, version=content.model_version, parameters=parameters, manufacturer=MANUFACTURER
    )
    evaluations = [hd.sr.QualitativeEvaluation(FLAGGED, codes.SCT.Yes if content.flag else codes.SCT.No)]
    if content.flag:
        evaluations.append(hd.sr.QualitativeEvaluation(FLAG_REASON, finding))
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=derive_uid("2.25", uids.sr_instance_uid, "tracking"),
            identifier=f"{content.task} triage",
        ),
        finding_type=finding if content.flag else None,
        algorithm_id=algorithm,
        measurements=[
            hd.sr.Measurement(name=SCORE, value=content.score, unit=_NO_UNITS),
            hd.sr.Measurement(name=OPERATING_POINT, value=content.threshold, unit=_NO_UNITS),
        ],
        qualitative_evaluations=evaluations,
        source_images=images or None,
    )
    group[0].ContentSequence.append(
        hd.sr.TextContentItem(
            name=PACKAGE_SHA256, value=content.model_sha256, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
        )
    )
    _comment(
        group,
        flag_wording(content) + ". The score is the model's output compared with its "
        "operating point; it is not a probability.",
    )
    _comment(group, f"{NOT_FOR_DIAGNOSTIC_USE}: AI triage result, not a diagnosis; a radiologist reads every study.")
    return group
