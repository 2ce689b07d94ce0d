"""Synthetic datasets generated once and kept, named by what made them, known by content hash.

A dataset is a labelled DICOM folder written by a generator (:mod:`training.data.ct_synth`
or :mod:`training.data.cr_synth`) from its configuration. Writing a head-CT set of 700
patients takes minutes, so each is generated once into the cache (``var/datasets`` under
the repository, or ``$TRAINING_DATASETS``) under a name made of the generator, its seed,
its size and a hash of its configuration and of the generator's source: changing either
makes a new dataset, never a silently different one under an old name. Its content hash
(:func:`content_sha256`: the sha256 of ``sha256  path`` lines over every file) is kept
beside it in ``CONTENT_SHA256`` and goes into a package's lineage.

A generation writes into ``NAME.partial`` and renames it when complete, so an interrupted
one is started again, never reused.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from training.data import cr_synth, ct_synth
from training.data.cr_synth import CRConfig
from training.data.ct_synth import CTConfig

REPOSITORY = Path(__file__).resolve().parents[1]
CONTENT_FILE = "CONTENT_SHA256"
MANIFEST_FILE = "CONTENT_MANIFEST.txt"


def cache_root() -> Path:
    """Where datasets are kept: ``$TRAINING_DATASETS``, else ``var/datasets`` in the repository."""
    return Path(os.environ.get("TRAINING_DATASETS") or REPOSITORY / "var" / "datasets")


@dataclass(frozen=True)
class Dataset:
    """A generated dataset on disk."""

    path: Path
    sha256: str
    #: Seconds its generation took in this process; ``None`` when it came from the cache.
    generated_seconds: float | None = None


def dataset_name(generator: CTConfig | CRConfig) -> str:
    """``head-ct-SEED-N-HASH`` or ``chest-cr-...`` (pure): the hash covers the whole
    configuration and the generator module's source."""
    module = ct_synth if isinstance(generator, CTConfig) else cr_synth
    kind = "head-ct" if isinstance(generator, CTConfig) else "chest-cr"
    digest = hashlib.sha256(json.dumps(asdict(generator), sort_keys=True).encode()
                            + inspect.getsource(module).encode()).hexdigest()[:12]
    return f"{kind}-{generator.seed}-{generator.n_patients}-{digest}"


def content_manifest(folder: Path) -> bytes:
    """``sha256  relative/path`` of every file under ``folder``, sorted by path, leaving out
    the cache's own two files."""
    folder = Path(folder)
    lines = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in (CONTENT_FILE, MANIFEST_FILE)):
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        lines.append(f"{digest.hexdigest()}  {path.relative_to(folder).as_posix()}")
    return ("\n".join(lines) + "\n").encode()


def content_sha256(folder: Path) -> str:
    """The dataset's identity: sha256 of :func:`content_manifest`."""
    return hashlib.sha256(content_manifest(folder)).hexdigest()


def generate(generator: CTConfig | CRConfig, folder: Path) -> None:
    """Write the generator's dataset into ``folder``."""
    if isinstance(generator, CTConfig):
        ct_synth.generate_ct_dataset(generator, folder)
    else:
        cr_synth.generate_cr_dataset(generator, folder)


def materialise(generator: CTConfig | CRConfig, root: Path | None = None,
                log: Callable[[str], None] = print) -> Dataset:
    """The generator's dataset from the cache, generated first if it is not there."""
    root = Path(root) if root is not None else cache_root()
    final = root / dataset_name(generator)
    if (final / CONTENT_FILE).exists():
        return Dataset(final, (final / CONTENT_FILE).read_text().strip())
    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    log(f"generating {final.name} ({generator.n_patients} patients) into {root}")
    t0 = time.perf_counter()
    generate(generator, partial)
    manifest = content_manifest(partial)
    (partial / MANIFEST_FILE).write_bytes(manifest)
    sha = hashlib.sha256(manifest).hexdigest()
    (partial / CONTENT_FILE).write_text(sha + "\n")
    os.replace(partial, final)
    seconds = time.perf_counter() - t0
    log(f"generated {final.name} in {seconds:.0f} s, content sha256 {sha}")
    return Dataset(final, sha, seconds)
