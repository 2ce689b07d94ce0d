"""A benchmark's --write replaces its section's lead and keeps the hand-written subsections."""

from __future__ import annotations

from scripts.bench_ingest import write_section


def test_write_replaces_the_lead_keeps_subsections_and_the_next_section(tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Time\n\nold figures\n\n### An earlier run\n\nkept\n\n## Web\n\nweb figures\n")
    write_section(doc, "## Time", "new figures")
    assert doc.read_text() == (
        "# Benchmarks\n\n## Time\n\nnew figures\n\n### An earlier run\n\nkept\n\n## Web\n\nweb figures\n"
    )
    write_section(doc, "## Web", "faster")
    assert doc.read_text().endswith("### An earlier run\n\nkept\n\n## Web\n\nfaster\n")
    write_section(doc, "## Device check", "none lent")
    assert doc.read_text().endswith("## Web\n\nfaster\n\n## Device check\n\nnone lent\n")
