"""Datasets cached by what made them; sealed sets read only with a ledger line each."""

import hashlib
import subprocess
from dataclasses import replace

import pytest

from training.data.ct_synth import CTConfig
from training.datasets import CONTENT_FILE, content_manifest, dataset_name, materialise
from training.errors import DirtyTreeError, SealedSetError
from training.lineage import code_revision, require_clean_tree
from training.sealed import LEDGER_COLUMNS, SealedSet, ledger_lines, sealed_read

SMALL = CTConfig(n_patients=2, seed=4, matrix=32, thicknesses_mm=(12.0,), coverage_mm=(60.0, 60.0))


def test_a_dataset_is_generated_once_and_known_by_its_content(tmp_path):
    lines = []
    first = materialise(SMALL, tmp_path, log=lines.append)
    assert first.generated_seconds is not None and first.path.name == dataset_name(SMALL)
    assert first.sha256 == hashlib.sha256(content_manifest(first.path)).hexdigest()
    assert (first.path / CONTENT_FILE).read_text().strip() == first.sha256
    again = materialise(SMALL, tmp_path, log=lines.append)
    assert again.generated_seconds is None and again.sha256 == first.sha256 and len(lines) == 2
    elsewhere = materialise(SMALL, tmp_path / "elsewhere", log=lines.append)
    assert elsewhere.sha256 == first.sha256  # a sealed set's registered hash holds on any machine
    assert dataset_name(replace(SMALL, seed=5)) != dataset_name(SMALL)
    assert dataset_name(replace(SMALL, positive_fraction=0.3)) != dataset_name(SMALL)


def test_an_interrupted_generation_is_never_reused(tmp_path):
    partial = tmp_path / (dataset_name(SMALL) + ".partial")
    partial.mkdir(parents=True)
    (partial / "junk").write_text("half a dataset")
    dataset = materialise(SMALL, tmp_path, log=lambda line: None)
    assert not partial.exists() and not (dataset.path / "junk").exists()


def _read(sealed, ledger, tmp_path, release=False, figures="sensitivity 1/1"):
    with sealed_read(sealed, release=release, model="m 1.0.0", code_revision="abc", model_sha256="f" * 64,
                     purpose="test", ledger=ledger, root=tmp_path / "datasets", log=lambda line: None) as reading:
        reading.figures = figures
        return reading.dataset


def test_every_sealed_read_appends_a_ledger_line_even_a_failed_one(tmp_path):
    ledger = tmp_path / "ledger.tsv"
    sealed = SealedSet("small-sealed", SMALL)
    dataset = _read(sealed, ledger, tmp_path)
    _read(sealed, ledger, tmp_path, figures="specificity 2/2")
    with pytest.raises(RuntimeError):
        with sealed_read(sealed, release=False, model="m 1.0.0", code_revision="abc", model_sha256="f" * 64,
                         purpose="test", ledger=ledger, root=tmp_path / "datasets", log=lambda line: None):
            raise RuntimeError("scoring broke")
    lines = ledger_lines(ledger)
    assert len(lines) == 3 and list(lines[0]) == list(LEDGER_COLUMNS)
    assert [row["figures"] for row in lines] == ["sensitivity 1/1", "specificity 2/2",
                                                 "read failed: RuntimeError: scoring broke"]
    assert {row["sealed_sha256"] for row in lines} == {dataset.sha256}
    assert all(row["code_revision"] == "abc" and row["model"] == "m 1.0.0" for row in lines)


def test_a_release_refuses_an_unregistered_or_changed_sealed_set(tmp_path):
    ledger = tmp_path / "ledger.tsv"
    with pytest.raises(SealedSetError, match="not registered"):
        _read(SealedSet("small-sealed", SMALL), ledger, tmp_path, release=True)
    assert not ledger.exists()  # refused before reading: nothing to log
    with pytest.raises(SealedSetError, match="not the registered"):
        _read(SealedSet("small-sealed", SMALL, sha256="0" * 64), ledger, tmp_path, release=True)
    registered = materialise(SMALL, tmp_path / "datasets").sha256
    _read(SealedSet("small-sealed", SMALL, sha256=registered), ledger, tmp_path, release=True)
    assert len(ledger_lines(ledger)) == 1


def _git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_a_release_is_refused_from_a_dirty_tree_and_names_the_files(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "spec.py").write_text("a = 1\n")
    _git(repo, "add", "spec.py")
    _git(repo, "-c", "user.email=t@example.org", "-c", "user.name=t", "commit", "-qm", "spec")
    head = require_clean_tree(repo)
    assert code_revision(repo) == head and len(head) == 40
    (repo / "untracked.txt").write_text("notes")  # untracked files do not make a tree dirty
    assert require_clean_tree(repo) == head
    (repo / "spec.py").write_text("a = 2\n")
    with pytest.raises(DirtyTreeError, match=r"uncommitted changes \(spec.py\)"):
        require_clean_tree(repo)
    assert code_revision(repo) == head + "+dirty"
    with pytest.raises(DirtyTreeError, match="not a git checkout"):
        require_clean_tree(tmp_path / "nowhere")


def test_a_retired_sealed_set_joins_the_train_split_but_its_external_scanner(tmp_path):
    """A spent sealed set trains: every series but the held-out scanner's joins train, and
    its content must still be the registered one."""
    from training.build import Builder
    from training.data.folder import series_jobs
    from training.demo import DEMOS

    spent = replace(SMALL, n_patients=8, seed=5)
    spent_set = materialise(spent, tmp_path / "datasets", log=lambda line: None)
    sha = spent_set.sha256
    quick = DEMOS["head-ct"](quick=True)
    spec = replace(quick, generator=replace(SMALL, n_patients=8, seed=6), retired=(SealedSet("spent", spent, sha),))

    def builder(spec):
        return Builder(spec, tmp_path / "out", tmp_path / "key", tmp_path / "work", release=False,
                       ledger=tmp_path / "ledger.tsv", datasets=tmp_path / "datasets",
                       tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", command="", log=lambda line: None)

    b = builder(spec)
    try:
        b.data()
    finally:
        b.run.end()  # an open run keeps its SIGTERM handler: other tests expect the default
    joined = [j for j in b.splits["train"] if spent_set.path in j.paths[0].parents]
    every = series_jobs(spent_set.path, spec.input)
    external = [j for j in every if j.scanner == spec.external_scanner]
    assert external and len(joined) == len(every) - len(external)
    assert b.retired_card == [{"name": "spent", "sha256": sha, "series": len(joined),
                               "held_out_external": len(external)}]
    assert all(j.scanner != spec.external_scanner for j in b.splits["train"])
    assert len(b.classes["train"]) == len(b.splits["train"])

    tampered = builder(replace(spec, retired=(SealedSet("spent", spent, "0" * 64),)))
    with pytest.raises(SealedSetError, match="sealed set spent has content sha256"):
        try:
            tampered.data()
        finally:
            tampered.run.end(False)

