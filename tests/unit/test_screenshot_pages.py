"""``scripts/screenshot-pages`` shoots every page a person reads (issue 26): nothing runs
the script in the suite, so a page added later and never shot would go unnoticed. Every
GET route of the appliance's web app and of the hub is either in the script's page list
or left out here with the reason."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from appliance.config import load_settings
from appliance.parts import Parts
from appliance.web.app import create_app, route_table
from scripts.screenshot_pages import HUB_PAGES, PAGES
from training.hub.app import create_app as create_hub
from training.hub.repository import Repository
from training.hub.store import HubDatabase

#: GET routes that are no page of their own, and why.
NOT_PAGES = {
    "/": "redirects to the role's start page (/worklist or /admin)",
    "/healthz": "a probe for systemd and the load balancer: one line of text",
    "/readyz": "a probe: JSON",
    "/metrics": "Prometheus text",
    "/worklist/rows": "the rows the worklist page polls for: seen in the worklist's shot",
    "/studies/{study_uid}/capture/{sop_uid}.png": "the heat-map image inside the study page",
    "/api/studies": "JSON API",
    "/api/studies/{study_uid}": "JSON API",
    "/api/models": "JSON API",
    "/api/audit/verify": "JSON the audit page's 'Verify the chain' shows",
    "/admin/audit/export": "a CSV or JSON download",
    "/admin/compliance": "a report download (JSON or text)",
    "/admin/drift/plots/{key}/{name}": "a PNG inside the drift page",
}
HUB_NOT_PAGES = {
    "/healthz": "a probe",
    "/tuf/metadata/{name}": "signed TUF metadata (JSON) the boxes read",
    "/tuf/targets/{name}": "a package download",
}


def shot(route: str, paths: list[str]) -> bool:
    """Whether one of the script's ``paths`` (format fields such as ``{study}`` left in,
    query ignored) is the route ``route``."""
    pattern = re.compile(re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(route)) + "$")
    return any(pattern.match(urlsplit(path).path) for path in paths)


def check(routes: list[str], paths: list[str], excluded: dict[str, str]) -> None:
    missing = [r for r in routes if r not in excluded and not shot(r, paths)]
    assert not missing, f"neither shot by scripts/screenshot_pages.py nor excluded with a reason: {missing}"
    assert not [r for r in excluded if shot(r, paths)], "a route both shot and excluded"
    assert not set(excluded) - set(routes), f"excluded but no longer a route: {set(excluded) - set(routes)}"


def test_every_page_of_the_appliance_is_shot_or_excluded_with_a_reason(tmp_path):
    app = create_app(Parts(load_settings(environ={"APPLIANCE_DATA_DIR": str(tmp_path / "data")})))
    routes = sorted({path for path, methods, _ in route_table(app) if "GET" in methods})
    check(routes, [path for _, _, path in PAGES], NOT_PAGES)


def test_every_page_of_the_hub_is_shot_or_excluded_with_a_reason(tmp_path):
    hub = create_hub(HubDatabase(str(tmp_path / "hub.db")), Repository(tmp_path))
    routes = sorted({route.path for route in hub.routes if "GET" in route.methods})
    check(routes, [path for _, path in HUB_PAGES], HUB_NOT_PAGES)
