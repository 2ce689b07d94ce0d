"""Issue 26: an error page leads back to the admin page it came from, and a model change
that conflicts with the models' state answers 409."""

from __future__ import annotations

from appliance.errors import ConfigError, ModelConflict
from appliance.web.error_pages import back_link, nav_section, status_and_title


def test_an_admin_error_leads_back_to_its_page():
    assert back_link("/admin/models/change") == ("/admin/models", "Back to Models")
    assert back_link("/admin/dicom/peers/add") == ("/admin/dicom", "Back to DICOM")
    assert back_link("/admin/tokens/3/revoke") == ("/admin/users", "Back to Users")
    assert back_link("/admin") == ("/admin", "Back to Health")
    assert back_link("/studies/1.2.3") == ("/", "Back to the start page")


def test_a_conflict_is_409_and_a_bad_request_400():
    assert status_and_title(ModelConflict("x"))[0] == 409
    assert status_and_title(ConfigError("x")) == (400, "Could not do that")


def test_an_admin_error_page_highlights_the_tab_it_leads_back_to():
    """Issue 26 review: the rollback 409 page highlighted no tab; other admin pages do."""
    assert nav_section("/admin/models/confirm") == "models"
    assert nav_section("/admin/models/change") == "models"
    assert nav_section("/admin/tokens/3/revoke") == "users"
    assert nav_section("/admin/dicom/peers/add") == "dicom"
    assert nav_section("/admin") == "health"
    assert nav_section("/studies/1.2.3") is None
