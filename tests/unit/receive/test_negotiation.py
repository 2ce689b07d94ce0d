from __future__ import annotations

from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    MPEG2MPML,
)
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import PatientRootQueryRetrieveInformationModelFind, Verification

from appliance.receive.negotiation import negotiate_contexts


def context(cid, abstract, syntaxes):
    cx = build_context(abstract, syntaxes)
    cx.context_id = cid
    return cx


def test_storage_takes_the_requestors_first_acceptable_syntax():
    results = negotiate_contexts([
        context(1, CTImageStorage, [MPEG2MPML, JPEG2000Lossless, ExplicitVRLittleEndian]),
        context(3, "1.2.3.4.5.6", [ImplicitVRLittleEndian]),  # private / unknown: stored too
        context(5, Verification, [JPEG2000Lossless, ImplicitVRLittleEndian]),
    ])
    assert [(r.context_id, r.result, r.transfer_syntax[0]) for r in results] == [
        (1, 0, JPEG2000Lossless), (3, 0, ImplicitVRLittleEndian), (5, 0, ImplicitVRLittleEndian)]


def test_unsupported_syntax_and_services_are_refused_per_context():
    results = negotiate_contexts([
        context(1, CTImageStorage, [MPEG2MPML]),
        context(3, PatientRootQueryRetrieveInformationModelFind, [ImplicitVRLittleEndian]),
    ])
    assert [(r.context_id, r.result) for r in results] == [(1, 0x04), (3, 0x03)]


def test_a_context_proposing_no_transfer_syntax_is_refused_with_result_4():
    """Issue 13, item 9. Before: IndexError in the handler, and the socket closed with no PDU."""
    empty = context(1, CTImageStorage, [ImplicitVRLittleEndian])
    empty._transfer_syntax = []
    [result] = negotiate_contexts([empty])
    assert (result.context_id, result.result) == (1, 0x04)
    assert result.transfer_syntax == [ImplicitVRLittleEndian]  # one sub-item, not significant
