"""The trainer's errors, under the project's one exception root (``appliance.errors``).

Hierarchy
---------
ApplianceError
    BuildError             a build refused to go on; the message says why and what to do
        DirtyTreeError     a release asked for from uncommitted code
        SealedSetError     a sealed test set is unregistered, changed, or read outside a release
        SpecError          a model spec file is unreadable or a key in it is missing or wrong
        IntakeError        a labelled folder failed an intake check (the file or row, and why)
"""

from appliance.errors import ApplianceError


class BuildError(ApplianceError):
    """A build refused to go on; the message says why and what to do."""


class DirtyTreeError(BuildError):
    """A release was asked for from a working tree with uncommitted changes."""


class SealedSetError(BuildError):
    """A sealed test set is unregistered, has changed since it was registered, or was read
    outside a release."""


class SpecError(BuildError):
    """A model spec file is unreadable, or a key in it is missing or wrong."""


class IntakeError(BuildError):
    """A labelled folder failed an intake check; the message names the file or row and
    every problem found (up to a limit), so one pass fixes them all."""
