"""Sealed test sets: registered once by content hash, read only by a release, every read logged.

A sealed test set is generated from a seed no build has used for anything else
(:class:`SealedSet`), kept in the dataset cache (:mod:`training.datasets`) and registered by
its content sha256 in the model's spec. A model is tuned on the other splits; the sealed
set is read once per release, for the card. So that tuning on it would show, every read
appends one line to the ledger kept in the repository (:data:`LEDGER`: when, which model
and set, the code revision, the hash of the model read against it, and the figures it
gave), whether the read ended in figures or in an error.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from training.data.cr_synth import CRConfig
from training.data.ct_synth import CTConfig
from training.datasets import Dataset, content_sha256, materialise
from training.errors import SealedSetError

LEDGER = Path(__file__).resolve().parent / "specs" / "sealed-test-ledger.tsv"
LEDGER_COLUMNS = ("utc", "model", "sealed_set", "sealed_sha256", "code_revision", "model_sha256", "purpose", "figures")


@dataclass(frozen=True)
class SealedSet:
    """A model's sealed test set: its generator (a seed never used for anything else) or
    the labelled folder that holds it, and its registered content hash (``None`` until
    registered; a release refuses that)."""

    name: str
    generator: CTConfig | CRConfig | None
    sha256: str | None = None
    folder: Path | None = None

    def __post_init__(self):
        if (self.generator is None) == (self.folder is None):
            raise ValueError(f"sealed set {self.name}: give either a generator or a folder")


@dataclass
class SealedRead:
    """One read of a sealed set in progress: the dataset, and the figures to log for it."""

    dataset: Dataset
    figures: str = field(default="")


def open_sealed(sealed: SealedSet, root: Path | None = None, log: Callable[[str], None] = print) -> Dataset:
    """The sealed set from the dataset cache (generated if absent), checked against its
    registered hash (a folder's hash computed now); :class:`SealedSetError` when it differs."""
    if sealed.folder is not None:
        if not (Path(sealed.folder) / "labels.csv").is_file():
            raise SealedSetError(f"sealed set {sealed.name}: {sealed.folder} has no labels.csv")
        dataset = Dataset(Path(sealed.folder), content_sha256(sealed.folder))
    else:
        assert sealed.generator is not None
        dataset = materialise(sealed.generator, root, log)
    if sealed.sha256 is not None and dataset.sha256 != sealed.sha256:
        raise SealedSetError(f"sealed set {sealed.name} has content sha256 {dataset.sha256}, not the registered "
                             f"{sealed.sha256}: the generator or its configuration changed, so it is no longer the set "
                             "the earlier releases were measured on")
    return dataset


@contextmanager
def sealed_read(sealed: SealedSet, *, release: bool, model: str, code_revision: str | None, model_sha256: str,
                purpose: str, ledger: Path = LEDGER, root: Path | None = None,
                log: Callable[[str], None] = print) -> Iterator[SealedRead]:
    """Read a sealed set: yields a :class:`SealedRead` whose ``figures`` the caller fills;
    on leaving, one line goes to ``ledger`` (the error instead of figures if one was raised).

    A ``release`` refuses an unregistered set (``sha256`` ``None``): register it first
    (``python -m training sealed-hash MODEL`` prints the hash) and commit the spec.
    """
    if release and sealed.sha256 is None:
        raise SealedSetError(f"sealed set {sealed.name} is not registered: generate it and record its content sha256 "
                             "in the spec (python -m training sealed-hash MODEL prints it, or sha256 of its folder's "
                             "content manifest), commit, then build the release")
    reading = SealedRead(open_sealed(sealed, root, log))
    try:
        yield reading
    except BaseException as exc:
        append_ledger(ledger, model, sealed, reading.dataset.sha256, code_revision, model_sha256, purpose,
                      f"read failed: {type(exc).__name__}: {exc}")
        raise
    append_ledger(ledger, model, sealed, reading.dataset.sha256, code_revision, model_sha256, purpose,
                  reading.figures or "no figures recorded")


def append_ledger(ledger: Path, model: str, sealed: SealedSet, sealed_sha256: str, code_revision: str | None,
                  model_sha256: str, purpose: str, figures: str) -> None:
    """Append one line to the ledger (a tab-separated file with a header), flushed to disk."""
    ledger = Path(ledger)
    ledger.parent.mkdir(parents=True, exist_ok=True)
    new = not ledger.exists() or ledger.stat().st_size == 0
    with open(ledger, "a", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        if new:
            writer.writerow(LEDGER_COLUMNS)
        writer.writerow([dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), model, sealed.name,
                         sealed_sha256, code_revision or "unknown", model_sha256, purpose,
                         " ".join(figures.split())])
        f.flush()
        os.fsync(f.fileno())


def ledger_lines(ledger: Path = LEDGER) -> list[dict[str, str]]:
    """The ledger's reads, oldest first."""
    if not Path(ledger).exists():
        return []
    with open(ledger, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))
