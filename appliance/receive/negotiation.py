"""Presentation context negotiation for the listener (pure).

Verification is accepted with the uncompressed transfer syntaxes; every storage SOP class
(standard, private or unknown to this build) with the first transfer syntax the requestor
proposed among those the appliance can store and decode, in the requestor's order of
preference. Anything else is refused per context, not per association.
"""

from __future__ import annotations

from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom.presentation import PresentationContext
from pynetdicom.service_class import ServiceClass, StorageServiceClass
from pynetdicom.sop_class import Verification, uid_to_service_class  # type: ignore[attr-defined]

UNCOMPRESSED: tuple[UID, ...] = (ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian)
ACCEPTED_TRANSFER_SYNTAXES: tuple[UID, ...] = (
    *UNCOMPRESSED,
    DeflatedExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
)

# Presentation context results (PS3.8 9.3.3.2)
ACCEPTANCE = 0x00
ABSTRACT_SYNTAX_NOT_SUPPORTED = 0x03
TRANSFER_SYNTAXES_NOT_SUPPORTED = 0x04


def is_storage_class(uid: UID) -> bool:
    """Storage SOP classes, and private or unknown ones, which are stored as received."""
    if uid.is_private:
        return True
    service = uid_to_service_class(uid)
    return service is StorageServiceClass or service is ServiceClass


def negotiate_contexts(requested: list[PresentationContext]) -> list[PresentationContext]:
    """One result per requested context, in context ID order."""
    results = []
    for rq in requested:
        abstract = UID(rq.abstract_syntax or "")
        acceptable: tuple[UID, ...]
        if abstract == Verification:
            acceptable = UNCOMPRESSED
        elif is_storage_class(abstract):
            acceptable = ACCEPTED_TRANSFER_SYNTAXES
        else:
            acceptable = ()
        chosen = next((ts for ts in rq.transfer_syntax if ts in acceptable), None)
        # A refused context still carries one transfer syntax sub-item, whose value is not
        # significant (PS3.8 9.3.3.2); a requestor that proposed none (which PS3.8 9.3.2.2
        # does not allow) gets Implicit VR Little Endian there and result 4.
        placeholder: list[str | bytes | UID] = [rq.transfer_syntax[0] if rq.transfer_syntax else ImplicitVRLittleEndian]
        result = PresentationContext()
        result.context_id = rq.context_id
        result.abstract_syntax = abstract
        if not acceptable:
            result.result = ABSTRACT_SYNTAX_NOT_SUPPORTED
            result.transfer_syntax = placeholder
        elif chosen is None:
            result.result = TRANSFER_SYNTAXES_NOT_SUPPORTED
            result.transfer_syntax = placeholder
        else:
            result.result = ACCEPTANCE
            result.transfer_syntax = [chosen]
        results.append(result)
    return sorted(results, key=lambda cx: cx.context_id or 0)
