"""Screenshots of every page, behind ``scripts/screenshot-pages`` (see that file for usage)."""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from scripts.demo_box import DEMO_KEY, MODELS, PASSWORD, DemoBox, demo_box  # noqa: E402
from scripts.harness import free_port, wait_until  # noqa: E402
from training.package import generate_keypair, load_private_key, resign_package  # noqa: E402

#: name -> (width, height): a laptop, a large monitor, a phone
SIZES = {"1366x768": (1366, 768), "1920x1080": (1920, 1080), "390x844": (390, 844)}
#: The appliance's pages as (file name, who signs in, path). ``{what}``/``{study}``: each demo
#: study; ``{model}``/``{later}``: the head-CT model and a later version installed, not
#: active (:func:`later_version`); ``{single}``: a model with one version, which has nothing
#: to roll back to, so its rollback confirmation is the 409 page.
PAGES = [
    ("login", None, "/login"),
    ("worklist", "rad", "/worklist"),
    ("study-{what}", "rad", "/studies/{study}"),
    ("admin-health", "bio", "/admin"),
    ("admin-models", "bio", "/admin/models"),
    ("admin-models-confirm", "bio", "/admin/models/confirm?action=shadow&model_id={model}&version={later}"),
    ("admin-models-conflict", "bio", "/admin/models/confirm?action=rollback&model_id={single}"),
    ("admin-dicom", "bio", "/admin/dicom"),
    ("admin-drift", "bio", "/admin/drift"),
    ("admin-audit", "bio", "/admin/audit"),
    ("admin-users", "boss", "/admin/users"),
]
#: The hub's pages, seen by its operator.
HUB_PAGES = [("hub-fleet", "/fleet"), ("hub-releases", "/releases")]
HEAD_CT, CHEST = next(MODELS.glob("head-ct-*.tar")), next(MODELS.glob("chest-cr-*.tar"))
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def hub(work: Path, box: DemoBox):
    """A demo hub (as ``scripts/run-hub``) the box enrols with and syncs to once; (process, url, operator token)."""
    data = work / "hub"

    def admin(*args: str) -> str:
        return subprocess.run([sys.executable, "-m", "training.hub", *args, "--data-dir", str(data)], cwd=REPO,
                              capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]

    for package in sorted(MODELS.glob("*.tar")):
        admin("publish", str(package), "--trusted-key", str(DEMO_KEY), "--ring", "all")
    token = admin("token", "--site", "Demo appliance")
    operator = admin("operator-token", "--name", "demo")
    port = free_port()
    log = open(work / "hub.log", "ab")
    process = subprocess.Popen([sys.executable, "-m", "training.hub", "--port", str(port), "--data-dir", str(data)],
                               cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    import httpx

    def up() -> bool:
        try:
            return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(up, timeout=90, what="the hub")
    box.cli("sync", "enrol", "--hub", url, "--token", token)
    box.cli("sync", check=False)
    return process, url, operator


def later_version(work: Path, box: DemoBox) -> str:
    """The head-CT demo package re-signed as its next patch version with a key made here,
    installed (not activated) with that key trusted for the install: a change the
    confirmation page can ask about. Its version."""
    model, version = HEAD_CT.stem.rsplit("-", 1)
    major, minor, patch = version.split(".")
    later = f"{major}.{minor}.{int(patch) + 1}"
    private, public = generate_keypair(work / "later-version.key")
    package = work / f"{model}-{later}.tar"
    resign_package(HEAD_CT, package, load_private_key(private), version=later)
    subprocess.run([sys.executable, "-m", "appliance.cli", "models", "install", str(package)], cwd=REPO,
                   env={**box.env, "APPLIANCE_MODELS_TRUSTED_KEYS": f"{DEMO_KEY},{public}"},
                   capture_output=True, text=True, check=True, timeout=600)
    return later


def appliance_pages(box: DemoBox, later: str) -> list[tuple[str, str | None, str]]:
    """:data:`PAGES` with the demo box's studies and models filled in."""
    names = {"model": HEAD_CT.stem.rsplit("-", 1)[0], "later": later, "single": CHEST.stem.rsplit("-", 1)[0]}
    pages = []
    for name, user, path in PAGES:
        if "{study}" in path:
            pages += [(name.format(what=what), user, path.format(study=uid)) for what, uid in box.studies.items()]
        else:
            pages.append((name, user, path.format(**names)))
    return pages


def shoot(box: DemoBox, pages: list[tuple[str, str | None, str]], hub_url: str, operator: str,
          out: Path) -> list[Path]:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    taken: list[Path] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        for size, (width, height) in SIZES.items():
            contexts = {}
            for name, user, path in pages:
                if user not in contexts:
                    contexts[user] = browser.new_context(viewport={"width": width, "height": height})
                    if user:
                        page = contexts[user].new_page()
                        page.set_default_timeout(300_000)
                        page.goto(f"{box.web_url}/login")
                        page.fill("#name", user)
                        page.fill("#password", PASSWORD)
                        page.click("button[type=submit]")
                        page.wait_for_load_state()
                        page.close()
                page = contexts[user].new_page()
                page.set_default_timeout(300_000)  # the drift page draws its plots; a busy machine is slow
                page.goto(box.web_url + path)
                page.wait_for_load_state("networkidle")
                taken.append(out / f"{name}-{size}.png")
                page.screenshot(path=str(taken[-1]), full_page=True)
                page.close()
            for context in contexts.values():
                context.close()
            context = browser.new_context(viewport={"width": width, "height": height},
                                          http_credentials={"username": "operator", "password": operator})
            for name, path in HUB_PAGES:
                page = context.new_page()
                page.set_default_timeout(300_000)
                page.goto(hub_url + path)
                page.wait_for_load_state("networkidle")
                taken.append(out / f"{name}-{size}.png")
                page.screenshot(path=str(taken[-1]), full_page=True)
                page.close()
            context.close()
        browser.close()
    return taken


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=REPO / "var" / "screenshots")
    parser.add_argument("--keep", type=Path, help="build the box in this folder and keep it (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="screenshots-") as tmp:
        work = args.keep or Path(tmp)
        with demo_box(work) as box:
            process, url, operator = hub(work, box)
            try:
                pages = appliance_pages(box, later_version(work, box))
                for path in shoot(box, pages, url, operator, args.out):
                    print(path)
            finally:
                process.terminate()
                process.wait(timeout=30)


if __name__ == "__main__":
    main()
