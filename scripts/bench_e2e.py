"""Time to triage, behind ``scripts/bench-e2e`` (see that file for usage).

Each configuration is its own ``appliance serve`` (own port and data), all started
together and sending to one Orthanc; every run sends one synthetic head CT to each of
them in turn (the same images under new UIDs), so the configurations are measured side
by side, minutes apart at most, on a machine whose load changes.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from scripts.bench_ingest import machine, write_section  # noqa: E402
from scripts.harness import ApplianceProcess, Orthanc, free_port, storescu  # noqa: E402
from training.data.ct_synth import CTConfig, generate_ct_dataset  # noqa: E402

#: storescu's calling AE title (dcmtk's default).
SENDER = "STORESCU"
#: The default ``dicom.learn_grace_after_series``.
LEARN_AFTER = 20
#: name -> (what it is, settings). The first is the baseline the ratios divide by.
CONFIGURATIONS: dict[str, tuple[str, dict[str, str]]] = {
    "before": (
        "decoded at completion (worker.prepare_cache_mb = 0), release grace 1 s: the old path",
        {"worker_prepare_cache_mb": "0"},
    ),
    "prepared": ("prepared on arrival, release grace 1 s (the default settings)", {}),
    "prepared, grace 0": (
        f"prepared on arrival, release grace 0 for the sender (release_grace_by_ae {SENDER}=0)",
        {"dicom_release_grace_by_ae": f"{SENDER}=0"},
    ),
    "prepared, learned": (
        f"the default settings after the box has seen {LEARN_AFTER} one-slice series from the sender, each in "
        "one association: it learned the sender never splits a series (learn_grace_after_series), so its grace is 0",
        {},
    ),
}
#: Series each sent in one association before a "learned" configuration is measured.
WARM_UP = {"prepared, learned": LEARN_AFTER}


def cli(env: dict[str, str], *args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "appliance.cli", *args], env=env, cwd=REPO, capture_output=True, text=True, check=True
    ).stdout


def head_ct_200(folder: Path, seed: int) -> Path:
    """One synthetic head CT of about 200 thin 512x512 slices; its folder."""
    generate_ct_dataset(
        CTConfig(n_patients=1, seed=seed, matrix=512, coverage_mm=(125.0, 125.0), thicknesses_mm=(0.625,)),
        folder,
        workers=2,
    )
    return next(folder.glob("*/CT/*.dcm")).parent


def with_new_uids(source: Path, folder: Path) -> str:
    """The study in ``source`` written to ``folder`` under new study, series and instance
    UIDs (the same pixels); its study UID."""
    import pydicom
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True)
    study, series = generate_uid(), generate_uid()
    for path in sorted(source.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(folder / path.name)
    return study


def warm_up(boxes: dict[str, ApplianceProcess], work: Path) -> None:
    """Send each box of a :data:`WARM_UP` configuration its one-slice series, each in its
    own association, and wait until every one has ended (none is triaged: too few slices)."""
    for name, count in WARM_UP.items():
        if name not in boxes:
            continue
        source = head_ct_200(work / "warm-up-source", seed=999).parent.parent
        first = sorted(source.glob("*/CT/*.dcm"))[:1]
        for n in range(count):
            one = work / "warm-up" / f"{n}"
            one.mkdir(parents=True)
            (one / first[0].name).write_bytes(first[0].read_bytes())
            folder = work / "warm-up-new" / f"{n}"
            with_new_uids(one, folder)
            storescu(boxes[name].port, folder, SENDER).check_returncode()
        deadline = time.monotonic() + 120
        while sum(s["state"] != "receiving" for s in boxes[name].status()["series"]) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}: the warm-up series did not end: {boxes[name].status()}")
            time.sleep(0.5)
        time.sleep(6)  # the listener reads each sender's run every 5 s


def sr_arrived(pacs: Orthanc, study_uid: str) -> bool:
    """The study in Orthanc holds only what the appliance sent back: is the SR there?"""
    return any(
        pacs.instance_metadata(i["ID"]).get("SopClassUid", "").startswith("1.2.840.10008.5.1.4.1.1.88")
        for i in pacs.instances_of_study(study_uid)
    )


def completion_waits(box: ApplianceProcess) -> dict[str, float]:
    """Study UID -> seconds from the association's release to the job's creation (the
    release grace and the completion poll), from the box's own database."""
    with sqlite3.connect(box.data_dir / "appliance.db") as conn:
        rows = conn.execute(
            "SELECT s.study_instance_uid, MIN(j.created_at) - s.released_at FROM series s "
            "JOIN jobs j USING (series_instance_uid) WHERE s.released_at IS NOT NULL "
            "GROUP BY s.series_instance_uid"
        ).fetchall()
    return {study: wait for study, wait in rows}


def percentile95(values: list[float]) -> float:
    return sorted(values)[max(0, round(0.95 * len(values)) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--models", type=Path, default=REPO / "firmware-config" / "models")
    parser.add_argument(
        "--only",
        choices=list(CONFIGURATIONS),
        action="append",
        help="measure only these configurations (default: all, side by side)",
    )
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    package = sorted(args.models.glob("head-ct-ich-demo-*.tar"))[-1]
    public_key = args.models / "demo-signing.pub"
    names = args.only or list(CONFIGURATIONS)

    latencies: dict[str, list[float]] = {name: [] for name in names}
    waits: dict[str, list[float]] = {name: [] for name in names}
    audit: dict[str, list[dict]] = {}
    slices, model = [], {}
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        work = Path(tmp)
        with Orthanc(work / "orthanc") as pacs:
            boxes: dict[str, ApplianceProcess] = {}
            try:
                for n, name in enumerate(names):
                    box = ApplianceProcess(
                        work / f"box{n}" / "data",
                        port=free_port(),
                        dicom_destinations=pacs.destination,
                        models_trusted_keys=str(public_key),
                        **CONFIGURATIONS[name][1],
                    )
                    cli(box.env, "models", "install", str(package))
                    [model] = json.loads(cli(box.env, "models", "list", "--json"))
                    cli(box.env, "models", "activate", model["id"], model["version"])
                    box.command = "serve"
                    boxes[name] = box.start()
                warm_up(boxes, work)
                studies: dict[str, set[str]] = {name: set() for name in names}
                for run in range(args.runs):
                    source = head_ct_200(work / f"source{run}", seed=1000 + run)
                    slices.append(len(list(source.glob("*.dcm"))))
                    for name, box in boxes.items():
                        folder = work / f"run{run}" / name.replace(" ", "").replace(",", "-")
                        study_uid = with_new_uids(source, folder)
                        studies[name].add(study_uid)
                        storescu(box.port, folder, SENDER).check_returncode()
                        released = time.perf_counter()  # storescu exits after its A-RELEASE
                        while not sr_arrived(pacs, study_uid):
                            if time.perf_counter() - released > 120:
                                raise RuntimeError(f"{name}: no SR after 120 s: {box.status()}")
                            time.sleep(0.02)
                        latencies[name].append(time.perf_counter() - released)
                for name, box in boxes.items():
                    rows = cli(box.env, "audit", "export", "--format", "json", "--kind", "inference")
                    audit[name] = [row["payload"] for row in json.loads(rows)]
                    by_study = completion_waits(box)
                    waits[name] = [by_study[s] for s in studies[name]]
            finally:
                for box in boxes.values():
                    box.stop()

    base = names[0]
    rows = []
    for name in names:
        p50, p95 = statistics.median(latencies[name]), percentile95(latencies[name])
        ratio = (
            ""
            if name == base
            else (f"{p50 / statistics.median(latencies[base]):.2f}x / {p95 / percentile95(latencies[base]):.2f}x")
        )
        rows.append(
            f"| {name} | {p50:.2f} | {p95:.2f} | {min(latencies[name]):.2f} | {max(latencies[name]):.2f} | {ratio} |"
        )
    phase_keys = list(audit[base][0]["latency"])
    phase_rows = []
    for name in names:
        phases = {key: statistics.median(a["latency"][key] for a in audit[name]) for key in phase_keys}
        wait = statistics.median(waits[name])
        rest = statistics.median(latencies[name]) - wait - sum(phases.values())
        phase_rows.append(
            f"| {name} | {wait:.2f} | " + " | ".join(f"{phases[k]:.2f}" for k in phase_keys) + f" | {rest:.2f} |"
        )
    lines = [
        f"Machine: {machine()}.",
        f"Command: `scripts/bench-e2e --runs {args.runs}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}).",
        "",
        f"A synthetic head CT of {statistics.median(slices):.0f} slices (512x512, 0.625 mm) sent with dcmtk "
        f"`storescu` (TCP_NODELAY=1, calling AE {SENDER}) to `appliance serve` (the listener in the serve "
        "process; the worker and the sender in its child process under the memory limit; "
        f"model `{model['id']} {model['version']}` on {audit[base][0]['backend']}/{audit[base][0]['precision']}); "
        "timed from storescu's exit after its A-RELEASE until the SR is listed in Orthanc's study "
        f"(REST polled every 20 ms). {args.runs} runs; each run sends the same images under new UIDs to "
        "one `appliance serve` per configuration in turn, so the configurations are measured side by side "
        "(other processes share the cores: compare the ratios more than the seconds):",
        "",
        *[f"- **{name}**: {CONFIGURATIONS[name][0]}" for name in names],
        "",
        "| configuration | p50 s | p95 s | min s | max s | p50 / p95 vs " + base + " |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        *rows,
        "",
        "Where the time goes (medians, seconds): *completion* is the association's release to the job "
        "(the release grace and the 0.1 s completion poll, from the box's database); the next four are "
        "the audit row's phases (*decode* is what was left to decode when the job started); *send* is "
        "the rest of the p50: the outbox, the C-STORE to Orthanc and Orthanc's REST listing it.",
        "",
        "| configuration | completion | "
        + " | ".join(k.removesuffix("_s").replace("_", " ") for k in phase_keys)
        + " | send |",
        "| --- | ---: | " + " | ".join("---:" for _ in phase_keys) + " | ---: |",
        *phase_rows,
    ]
    report = "\n".join(lines)
    print(report)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "latencies_s": latencies,
                    "completion_s": waits,
                    "machine": machine(),
                    "audit_latency": {n: [a["latency"] for a in audit[n]] for n in names},
                },
                indent=2,
            )
        )
    if args.write:
        write_section(REPO / "docs" / "benchmarks.md", "## Time to triage", report)


if __name__ == "__main__":
    main()
