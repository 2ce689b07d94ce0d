from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from scripts.harness import ApplianceProcess

# The tests' data folders are scratch folders on a plain disk: every appliance process they
# start inherits this. The refusal itself is tested with it removed (tests/system/test_at_rest_start.py).
os.environ.setdefault("APPLIANCE_ALLOW_UNENCRYPTED", "true")


@pytest.fixture(autouse=True)
def _sigterm_left_as_found():
    """A test that leaves SIGTERM handled (an MLflow run never ended keeps its handler)
    fails itself, instead of a later test that expects the default action."""
    before = signal.getsignal(signal.SIGTERM)
    yield
    assert signal.getsignal(signal.SIGTERM) is before, "this test left a SIGTERM handler installed"


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

    root = tmp_path_factory.mktemp("quick-packages")
    key = root / "keys" / "test.key"
    assert training_cli(["keygen", "--out", str(key)]) == 0
    packages = {"public_key": key.with_suffix(".pub"), "private_key": key}
    for model in ("head-ct", "chest-cr"):
        info = _quick_build(model, root, key)
        packages[model] = Path(info["package"])
    return packages


@pytest.fixture(scope="session")
def quick_build():
    """``quick_build(model, root, key, **build_overrides)``: a demo build at quick size
    with its datasets, ledger and MLflow runs under ``root``."""
    return _quick_build


def _quick_build(model, root: Path, key: Path, **overrides) -> dict:
    """Build a demo model (``head-ct``/``chest-cr`` at quick size, or a spec) with every
    store under ``root``: its datasets, its sealed-read ledger and its MLflow runs never
    touch the repository's."""
    from training.build import build
    from training.demo import DEMOS

    spec = DEMOS[model](quick=True) if isinstance(model, str) else model
    return build(spec, overrides.pop("out", root / "out"), key,
                 overrides.pop("work", root / f"work-{spec.id}"), ledger=root / "sealed-ledger.tsv",
                 datasets=root / "datasets", tracking_uri=f"sqlite:///{root}/mlflow.db", log=lambda line: None,
                 **overrides)


SHIPPED_MODELS = Path(__file__).resolve().parent.parent / "firmware-config" / "models"


@pytest.fixture(scope="session")
def demo_packages() -> dict[str, Path]:
    """The demo model packages that ship with the product (trained to full size from
    their seeds by scripts/build-demo-models) and the public key they are signed with."""
    packages = {"public_key": SHIPPED_MODELS / "demo-signing.pub"}
    for model, package_id in (("head-ct", "head-ct-ich-demo"), ("chest-cr", "chest-cr-pneumothorax-demo")):
        packages[model] = sorted(SHIPPED_MODELS.glob(f"{package_id}-*.tar"))[-1:]
    return packages
