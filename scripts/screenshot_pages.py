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

#: name -> (width, height): a laptop, a large monitor, a phone
SIZES = {"1366x768": (1366, 768), "1920x1080": (1920, 1080), "390x844": (390, 844)}
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


def shoot(box: DemoBox, hub_url: str, operator: str, out: Path) -> list[Path]:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    taken: list[Path] = []
    pages = [("login", None, "/login")]
    pages += [("worklist", "rad", "/worklist")]
    pages += [(f"study-{what}", "rad", f"/studies/{uid}") for what, uid in box.studies.items()]
    pages += [(name, "bio", path) for name, path in (("admin-health", "/admin"), ("admin-models", "/admin/models"),
                                                      ("admin-dicom", "/admin/dicom"), ("admin-drift", "/admin/drift"),
                                                      ("admin-audit", "/admin/audit"))]
    pages += [("admin-users", "boss", "/admin/users")]
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
            page = context.new_page()
            page.set_default_timeout(300_000)
            page.goto(f"{hub_url}/fleet")
            page.wait_for_load_state("networkidle")
            taken.append(out / f"hub-fleet-{size}.png")
            page.screenshot(path=str(taken[-1]), full_page=True)
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
                for path in shoot(box, url, operator, args.out):
                    print(path)
            finally:
                process.terminate()
                process.wait(timeout=30)


if __name__ == "__main__":
    main()
