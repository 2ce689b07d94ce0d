"""DIMSE status codes: every status the appliance answers with or interprets, named once.

References are to PS3.7 Annex C (status encoding) and PS3.4 (service-specific statuses).
What the listener answers in each case is documented in ``docs/conformance.md``.
"""

SUCCESS = 0x0000

# Warnings (PS3.7 C.3; PS3.4 B.2.3 for the Storage Service Class).
WARNING_ATTRIBUTE_LIST_ERROR = 0x0107
WARNING_ATTRIBUTE_VALUE_OUT_OF_RANGE = 0x0116
WARNING_INSTANCE_UID_MISMATCH = 0xB000  # "coercion of data elements": stored; the dataset's
#                                         SOP Instance UID differs from the request's (as storescp)
WARNING_ELEMENTS_DISCARDED = 0xB006
WARNING_SOP_CLASS_MISMATCH = 0xB007  # stored; the dataset does not match the requested SOP class

# Failures (PS3.7 C.4; PS3.4 B.2.3).
UNRECOGNIZED_OPERATION = 0x0211
OUT_OF_RESOURCES = 0xA700
DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000  # 0xCxxx: "cannot understand"; the low bits are ours, below
UNDECODABLE = 0xC210
INVALID_UID = 0xC211
IMAGE_TOO_LARGE = 0xC212
NESTED_TOO_DEEP = 0xC213
INFLATE_FAILED = 0xC214
MISSING_ATTRIBUTE = 0xC215
FILE_META_IN_DATASET = 0xC216  # a group 0002 element inside the dataset
DATASET_TOO_LARGE = 0xC217  # bytes besides pixel data past dicom.max_non_pixel_bytes,
#                             or a message past max_pixel_bytes + max_non_pixel_bytes
PIXEL_DATA_LENGTH_MISMATCH = 0xC218  # Pixel Data's length is not the declared image's


def is_success_or_warning(status: int) -> bool:
    """Success, or a warning: the peer stored the object (PS3.7 C)."""
    return (
        status == SUCCESS
        or status in (0x0001, WARNING_ATTRIBUTE_LIST_ERROR, WARNING_ATTRIBUTE_VALUE_OUT_OF_RANGE)
        or status & 0xF000 == 0xB000
    )


def is_permanent_failure(status: int) -> bool:
    """Out of resources (0xA7xx), SOP class mismatch (0xA9xx) or cannot understand (0xCxxx)."""
    return (
        status & 0xFF00 in (OUT_OF_RESOURCES, DATASET_DOES_NOT_MATCH_SOP_CLASS) or status & 0xF000 == CANNOT_UNDERSTAND
    )
