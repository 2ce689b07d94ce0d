from __future__ import annotations

from pathlib import Path

import pytest

from scripts.harness import ApplianceProcess


@pytest.fixture
def appliance(tmp_path: Path):
    """A running listener on a free loopback port, stopped after the test."""
    process = ApplianceProcess(tmp_path / "data").start()
    yield process
    process.stop()


@pytest.fixture
def make_appliance(tmp_path: Path):
    """Start listeners with custom settings: ``make_appliance(dicom_quiet_period_s=1)``."""
    started: list[ApplianceProcess] = []

    def make(**settings: str) -> ApplianceProcess:
        process = ApplianceProcess(tmp_path / f"data{len(started)}", **settings).start()
        started.append(process)
        return process

    yield make
    for process in started:
        process.stop()


@pytest.fixture(scope="session")
def quick_packages(tmp_path_factory) -> dict[str, Path]:
    """Both demo models built by the real pipeline at quick size (seconds, not minutes):
    signed packages that install and run, not accurate models."""
    from training.__main__ import main as training_cli
    from training.demo import DEMOS, build

    root = tmp_path_factory.mktemp("quick-packages")
    key = root / "keys" / "test.key"
    assert training_cli(["keygen", "--out", str(key)]) == 0
    packages = {"public_key": key.with_suffix(".pub"), "private_key": key}
    for model in ("head-ct", "chest-cr"):
        info = build(DEMOS[model](quick=True), root / "out", key, root / f"work-{model}", log=lambda line: None)
        packages[model] = Path(info["package"])
    return packages


SHIPPED_MODELS = Path(__file__).resolve().parent.parent / "firmware-config" / "models"


@pytest.fixture(scope="session")
def demo_packages() -> dict[str, Path]:
    """The demo model packages that ship with the product (trained to full size from
    their seeds by scripts/build-demo-models) and the public key they are signed with."""
    packages = {"public_key": SHIPPED_MODELS / "demo-signing.pub"}
    for model, package_id in (("head-ct", "head-ct-ich-demo"), ("chest-cr", "chest-cr-pneumothorax-demo")):
        packages[model] = sorted(SHIPPED_MODELS.glob(f"{package_id}-*.tar"))[-1:]
    return packages
