"""The one exception root of the appliance.

Hierarchy
---------
ApplianceError
    ConfigError            a setting is missing, malformed or out of range (names the key)
    StorageError           the spool or the SQLite index could not be written or read
    DicomError             a DICOM object or association broke a rule
        RejectedInstance   an instance refused with a specific DIMSE status
    PackageError           a model package is malformed, tampered with or untrusted
"""


class ApplianceError(Exception):
    """Root of every error the appliance raises on purpose."""


class ConfigError(ApplianceError):
    """A configuration value is invalid; the message names the key."""


class StorageError(ApplianceError):
    """The spool or the index could not be written or read."""


class DicomError(ApplianceError):
    """A DICOM object or association broke a rule."""


class RejectedInstance(DicomError):
    """An instance refused on receipt, carrying the DIMSE status to answer with.

    Parameters
    ----------
    status : int
        The DIMSE status returned to the sender (e.g. ``0xC211``).
    reason : str
        A short, specific explanation; goes into the log and the error comment.
    """

    def __init__(self, status: int, reason: str):
        super().__init__(f"0x{status:04X}: {reason}")
        self.status = status
        self.reason = reason


class PackageError(ApplianceError):
    """A model package failed verification; the message says exactly what is wrong."""
