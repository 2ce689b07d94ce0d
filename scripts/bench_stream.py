"""A sustained mixed stream, behind ``scripts/bench-stream`` (see that file for usage).

One ``appliance serve`` with the shipped head-CT and chest-CR models active, a real
Orthanc as its destination, and a stream of studies over the given minutes at ``scale``
times a large hospital's peak hour (:data:`PEAK_PER_HOUR`): each study is its own dcmtk
``storescu`` association, started at a seeded random time (a Poisson stream), up to
:data:`SENDERS` at once. Every study is the same source images under new UIDs, written
before the stream starts so the senders cost the box nothing but the network.

Measured per triaged series: from storescu's exit (after its A-RELEASE) to the SR
acknowledged by Orthanc (the outbox row's ``sent_at``, the same wall clock); and how
every series ended.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from scripts.bench_e2e import cli, completion_waits, head_ct_200, percentile95  # noqa: E402
from scripts.bench_ingest import machine, write_section  # noqa: E402
from scripts.harness import ApplianceProcess, Orthanc, free_port, storescu  # noqa: E402
from training.data.cr_synth import CRConfig, generate_cr_dataset  # noqa: E402

#: Studies per hour at a large hospital's peak (the issue's mix).
PEAK_PER_HOUR = {"CR": 120, "US": 50, "CT": 30, "MR": 25}
#: Associations open at once, at most (modalities and a PACS forwarding in parallel).
SENDERS = 4
#: What each study is: the models take the head CTs and chest radiographs; US and MR are
#: received, indexed and found not eligible.
STUDY_SHAPES = {
    "CR": "one chest radiograph (the trainer's generator, JPEG-LS lossless)",
    "US": "six 640x480 8-bit ultrasound images",
    "CT": "one head CT of about 200 0.625 mm 512x512 slices",
    "MR": "two 24-slice 256x256 MR series",
}
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88"


def write_plain_series(folder: Path, modality: str, count: int, rows: int, columns: int, bits: int) -> None:
    """One uncompressed greyscale series of ``count`` images (US or MR), fixed UIDs; the
    sends give it new ones."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, UltrasoundImageStorage, generate_uid

    sop_class = {"US": UltrasoundImageStorage, "MR": MRImageStorage}[modality]
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(folder.name))
    study, series = generate_uid(), generate_uid()
    for i in range(count):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID = sop_class, ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.PatientName, ds.PatientID, ds.Modality = "Stream^Patient", "STREAM001", modality
        ds.SeriesNumber, ds.InstanceNumber = 1, i + 1
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = rows, columns
        ds.BitsAllocated = ds.BitsStored = bits
        ds.HighBit, ds.PixelRepresentation = bits - 1, 0
        dtype = np.uint8 if bits == 8 else np.uint16
        ds.PixelData = rng.integers(0, 2 ** min(bits, 12), (rows, columns)).astype(dtype).tobytes()
        ds.save_as(folder / f"{i:04d}.dcm", enforce_file_format=True)


def sources(work: Path) -> dict[str, list[Path]]:
    """Each kind's source study as lists of series folders."""
    ct = head_ct_200(work / "ct", seed=2000)
    generate_cr_dataset(CRConfig(n_patients=1, seed=2001), work / "cr", workers=1)
    cr = next((work / "cr").rglob("*.dcm")).parent
    write_plain_series(work / "us", "US", 6, 480, 640, 8)
    for n in (1, 2):
        write_plain_series(work / "mr" / f"series{n}", "MR", 24, 256, 256, 16)
    return {"CT": [ct], "CR": [cr], "US": [work / "us"], "MR": sorted((work / "mr").iterdir())}


def with_new_uids(series_folders: list[Path], folder: Path) -> str:
    """The study (its series folders) written to ``folder`` under a new study UID and new
    series and instance UIDs, as a new patient would come; its study UID."""
    import pydicom
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True)
    study = generate_uid()
    for n, source in enumerate(series_folders):
        series = generate_uid()
        for path in sorted(source.glob("*.dcm")):
            ds = pydicom.dcmread(path)
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.save_as(folder / f"{n}-{path.name}")
    return study


def schedule(minutes: float, scale: float, seed: int) -> list[tuple[float, str]]:
    """(start second, kind) for every study of the stream, in start order: each kind's
    count over the minutes at ``scale`` times its peak rate, at uniform random times."""
    rng = random.Random(seed)
    seconds = minutes * 60
    starts = [
        (rng.uniform(0, seconds), kind)
        for kind, per_hour in PEAK_PER_HOUR.items()
        for _ in range(round(per_hour * scale * minutes / 60))
    ]
    return sorted(starts)


def results(box: ApplianceProcess) -> tuple[dict[str, float], dict[str, str]]:
    """Study UID -> when its first SR was acknowledged by Orthanc, and series UID -> state,
    from the box's own database."""
    with sqlite3.connect(box.data_dir / "appliance.db") as conn:
        sent = dict(
            conn.execute(
                "SELECT study_instance_uid, MIN(sent_at) FROM outbox WHERE state = 'sent' "
                "AND sop_class_uid LIKE ? GROUP BY study_instance_uid",
                (SR_CLASS + "%",),
            ).fetchall()
        )
        states = dict(conn.execute("SELECT study_instance_uid || ' ' || series_instance_uid, state FROM series"))
    return sent, states


def phases(box: ApplianceProcess) -> dict[str, dict[str, float]]:
    """Study UID -> where its time went: the wait from the association's release to its
    job (grace and completion poll, the box's database) and the active inference's audited
    phases (queue wait, decode, inference, output)."""
    waits = completion_waits(box)
    rows = json.loads(cli(box.env, "audit", "export", "--format", "json", "--kind", "inference"))
    found = {}
    for payload in (row["payload"] for row in rows):
        if payload["role"] == "active" and payload["study_instance_uid"] in waits:
            uid = payload["study_instance_uid"]
            found[uid] = {"completion_s": waits[uid], **payload["latency"]}
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--scale", type=float, default=10.0, help="times the peak hour (default 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", type=Path, default=REPO / "firmware-config" / "models")
    parser.add_argument("--write", action="store_true", help='replace "## Sustained stream" in docs/benchmarks.md')
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    plan = schedule(args.minutes, args.scale, args.seed)
    public_key = args.models / "demo-signing.pub"

    with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp:
        work = Path(tmp)
        source = sources(work / "sources")
        studies: list[tuple[float, str, Path, str]] = []
        for n, (start, kind) in enumerate(plan):
            folder = work / "sends" / f"{n:04d}-{kind}"
            studies.append((start, kind, folder, with_new_uids(source[kind], folder)))
        print(f"{len(studies)} studies written; streaming for {args.minutes} min", flush=True)
        released: dict[str, float] = {}
        late: list[float] = []
        failures: list[str] = []
        with Orthanc(work / "orthanc") as pacs:
            box = ApplianceProcess(
                work / "box" / "data",
                port=free_port(),
                dicom_destinations=pacs.destination,
                models_trusted_keys=str(public_key),
            )
            models = []
            for package in (sorted(args.models.glob(f"{name}-*.tar"))[-1] for name in ("head-ct", "chest-cr")):
                cli(box.env, "models", "install", str(package))
            for model in json.loads(cli(box.env, "models", "list", "--json")):
                cli(box.env, "models", "activate", model["id"], model["version"])
                models.append(f"{model['id']} {model['version']}")
            box.command = "serve"
            box.start()
            lock = threading.Lock()
            began = time.time()

            def send(study: tuple[float, str, Path, str]) -> None:
                start, kind, folder, uid = study
                time.sleep(max(0.0, began + start - time.time()))
                with lock:
                    late.append(time.time() - began - start)
                done = storescu(box.port, folder, f"{kind}SCANNER", "-xt")
                with lock:
                    released[uid] = time.time()
                    if done.returncode:
                        failures.append(f"{kind} {uid}: storescu exit {done.returncode}: {done.stderr[-300:]}")

            try:
                with ThreadPoolExecutor(max_workers=SENDERS) as pool:
                    list(pool.map(send, studies))
                stream_s = time.time() - began
                triaged_kinds = {"CT", "CR"}
                wanted = {uid for _, kind, _, uid in studies if kind in triaged_kinds}
                deadline = time.time() + 300
                while True:  # the tail: every series ended and every triaged study's SR acknowledged
                    sent, states = results(box)
                    if wanted <= set(sent) and all(s not in ("receiving", "queued") for s in states.values()):
                        break
                    if time.time() > deadline:
                        break
                    time.sleep(1.0)
                status = box.status()
                spent = phases(box)
            finally:
                box.stop()

    kinds = {uid: kind for _, kind, _, uid in studies}
    latency: dict[str, list[float]] = {"CT": [], "CR": []}
    for uid, at in sent.items():
        if uid in released and kinds.get(uid) in latency:
            latency[kinds[uid]].append(at - released[uid])
    ended: dict[str, dict[str, int]] = {}
    for key, state in states.items():
        kind = kinds.get(key.split(" ")[0], "?")
        ended.setdefault(kind, {}).setdefault(state, 0)
        ended[kind][state] += 1
    everything = latency["CT"] + latency["CR"]
    missing = sorted(uid for uid in wanted if uid not in sent)

    def row(name: str, values: list[float]) -> str:
        if not values:
            return f"| {name} | 0 | | | |"
        return (
            f"| {name} | {len(values)} | {statistics.median(values):.2f} | {percentile95(values):.2f} "
            f"| {max(values):.2f} |"
        )

    counts = ", ".join(f"{sum(k == kind for _, k in plan)} {kind}" for kind in PEAK_PER_HOUR)
    lines = [
        f"Machine: {machine()}.",
        f"Command: `scripts/bench-stream --minutes {args.minutes:g} --scale {args.scale:g}` "
        f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}).",
        "",
        f"{args.scale:g} times a large hospital's peak hour ({', '.join(f'{n} {k}' for k, n in PEAK_PER_HOUR.items())} "
        f"studies an hour) for {args.minutes:g} minutes: {len(plan)} studies ({counts}) at seeded random times, "
        f"each one dcmtk `storescu` association (TCP_NODELAY=1), up to {SENDERS} at once, into one "
        f"`appliance serve` with {' and '.join(f'`{m}`' for m in models)} active and a real Orthanc as its "
        "destination. Each study: " + "; ".join(f"{k} {v}" for k, v in STUDY_SHAPES.items()) + ". "
        "Timed from storescu's exit after its A-RELEASE to the SR acknowledged by Orthanc (the outbox's "
        "`sent_at`, same clock).",
        "",
        f"The stream took {stream_s:.0f} s to send (the last association ended "
        f"{stream_s - args.minutes * 60:+.0f} s from the planned end; an association started at most "
        f"{max(late):.1f} s after its planned time). Storescu failures: {len(failures)}. "
        f"Triaged studies without an SR when measured: {len(missing)}.",
        "",
        "| release -> SR | series | p50 s | p95 s | max s |",
        "| --- | ---: | ---: | ---: | ---: |",
        row("head CT (about 200 slices)", latency["CT"]),
        row("chest CR", latency["CR"]),
        row("all triaged", everything),
        "",
        "Where the time went (medians, seconds; *completion* is the release to the job, the rest are the "
        "audit row's phases, *queue wait* the job waiting for the one worker):",
        "",
        "| model | completion | queue wait | decode | inference | output |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        *[
            f"| {label} | "
            + " | ".join(
                f"{statistics.median(spent[u][key] for u in spent if kinds.get(u) == kind):.2f}"
                for key in ("completion_s", "queue_wait_s", "decode_s", "inference_s", "output_s")
            )
            + " |"
            for kind, label in (("CT", "head CT"), ("CR", "chest CR"))
            if any(kinds.get(u) == kind for u in spent)
        ],
        "",
        "How every series ended (the box's database): "
        + "; ".join(
            f"{kind}: " + ", ".join(f"{n} {s}" for s, n in sorted(v.items())) for kind, v in sorted(ended.items())
        )
        + ".",
    ]
    report = "\n".join(lines)
    print(report)
    for failure in failures[:5]:
        print(failure)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "latency_s": latency,
                    "ended": ended,
                    "missing": missing,
                    "failures": failures,
                    "late_s": late,
                    "status": status,
                    "machine": machine(),
                },
                indent=2,
            )
        )
    if args.write:
        write_section(REPO / "docs" / "benchmarks.md", "## Sustained stream", report)


if __name__ == "__main__":
    main()
