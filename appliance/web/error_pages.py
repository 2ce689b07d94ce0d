"""What an error page says and where it sends its reader back to."""

from __future__ import annotations

from appliance.errors import ApplianceError, ModelConflict
from appliance.web.uploads import UploadTooLarge

#: The admin pages by their path's second part, as the navigation names them.
ADMIN_SECTIONS = {
    "models": "Models",
    "dicom": "DICOM",
    "drift": "Drift",
    "audit": "Audit",
    "users": "Users",
    "tokens": "Users",
}


def back_link(path: str) -> tuple[str, str]:
    """``(href, words)`` of the page an error on ``path`` returns to: the admin page the
    request came from, else the start page."""
    parts = path.strip("/").split("/")
    if parts[0] != "admin":
        return "/", "Back to the start page"
    section = parts[1] if len(parts) > 1 else ""
    if section not in ADMIN_SECTIONS:
        return "/admin", "Back to Health"
    href = "/admin/users" if section == "tokens" else f"/admin/{section}"
    return href, f"Back to {ADMIN_SECTIONS[section]}"


def nav_section(path: str) -> str | None:
    """The navigation tab an error page on ``path`` highlights: the admin page its back
    link returns to (``health`` for ``/admin``); none off the admin pages."""
    href, _ = back_link(path)
    if not href.startswith("/admin"):
        return None
    return href.removeprefix("/admin").strip("/").split("/")[0] or "health"


def status_and_title(exc: ApplianceError) -> tuple[int, str]:
    """The HTTP status and the page title of an error raised on purpose."""
    if isinstance(exc, ModelConflict):
        return 409, "Not done: this conflicts with the models' current state"
    if isinstance(exc, UploadTooLarge):
        return 413, "Could not do that"
    return 400, "Could not do that"
