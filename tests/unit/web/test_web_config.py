"""The [web] settings: defaults, overrides, and a TLS pair that must be whole."""

from __future__ import annotations

import pytest

from appliance.config import load_settings
from appliance.errors import ConfigError


def test_web_defaults_and_environment_overrides():
    settings = load_settings(environ={"APPLIANCE_WEB_SESSION_IDLE_MINUTES": "5"})
    web = settings.web
    assert (web.port, web.session_idle_minutes, web.session_absolute_hours) == (8080, 5.0, 12.0)
    assert not web.tls.enabled


def test_a_certificate_without_its_key_is_refused_naming_the_section():
    with pytest.raises(ConfigError, match=r"web\.tls.*private_key go together"):
        load_settings(environ={"APPLIANCE_WEB_TLS_CERTIFICATE": "/etc/appliance/web.pem"})
    both = load_settings(environ={"APPLIANCE_WEB_TLS_CERTIFICATE": "/c.pem", "APPLIANCE_WEB_TLS_PRIVATE_KEY": "/k.pem"})
    assert both.web.tls.enabled
