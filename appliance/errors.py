"""The one exception root of the appliance.

Hierarchy
---------
ApplianceError
    ConfigError            a setting is missing, malformed or out of range (names the key)
    StorageError           the spool or the SQLite index could not be written or read
        IndexBusy          the index stayed locked past the listener's wait (the sender retries)
    DicomError             a DICOM object or association broke a rule
        RejectedInstance   an instance refused with a specific DIMSE status
        MalformedMessage   a DIMSE message that cannot be parsed (the association aborts)
    PackageError           a model package is malformed, tampered with or untrusted
        ModelConflict      a model change the models' current state does not allow (says why)
    InferenceError         a series could not be triaged; the message is the reason users see
        DecodeError        an instance's pixels could not be decoded
        InferenceTimeout   the series deadline passed before the model finished
    LeaseLost              a worker's lease on a job ran out; another worker records the job
    IllegalTransition      a series or job state change the state machine does not allow (a bug)
    ReportError            an anonymised drift report broke its schema (names the field path)
    SyncError              talking to the central hub failed or was refused (says why)
        ReleaseRefused     a release's TUF metadata or package failed verification (says why)
    AccessError            a web user, session or token was refused (says why, never the secret)
        LoginRefused       a sign-in failed or is throttled
"""


class ApplianceError(Exception):
    """Root of every error the appliance raises on purpose."""


class ConfigError(ApplianceError):
    """A configuration value is invalid; the message names the key."""


class StorageError(ApplianceError):
    """The spool or the index could not be written or read."""


class IndexBusy(StorageError):
    """The index stayed locked by another connection past ``dicom.database_wait_s``."""


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


class ModelConflict(PackageError):
    """A model change that conflicts with the installed versions' states (shadowing the
    active version, rolling back with no earlier one); the message says why and what to do."""


class MalformedMessage(DicomError):
    """A PDU or DIMSE command set that cannot be parsed (the association aborts)."""


class InferenceError(ApplianceError):
    """A series could not be triaged; the message is the reason shown to users."""


class DecodeError(InferenceError):
    """An instance's pixels could not be decoded."""


class InferenceTimeout(InferenceError):
    """The series deadline passed before the model finished (the notice says "timed out")."""


class LeaseLost(ApplianceError):
    """Our lease on a job ran out and another worker took the job; record nothing."""


class IllegalTransition(ApplianceError):
    """A series or job state change that :mod:`appliance.jobs` does not allow."""


class ReportError(ApplianceError):
    """An anonymised drift report does not fit its schema; the message names the field path."""


class SyncError(ApplianceError):
    """Enrolment, report upload or release refresh with the hub failed; the message says why."""


class ReleaseRefused(SyncError):
    """A release was refused: expired, rolled-back, mixed-and-matched or unsigned metadata,
    a package whose hash, signature or golden test fails. The message gives the reason."""


class AccessError(ApplianceError):
    """A web user, session, token or request was refused; the message says why."""


class LoginRefused(AccessError):
    """A sign-in was refused: wrong name or password, disabled user, or throttled."""


def internal_error(exc: BaseException) -> str:
    """The reason a bug gives a series: what was raised, in at most 500 characters."""
    return f"internal error: {type(exc).__name__}: {exc}"[:500]
