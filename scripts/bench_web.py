"""Worklist and /api/studies latency with a large archive, behind ``scripts/bench-web``.

The database is filled in one transaction with the rows the pipeline writes for each
study (one series, one instance, one job, the active result for analysed ones), in the
mix a busy site sees; every instance row points at one real DICOM file so the pages read
real headers. ``appliance web`` then serves it from its own process.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from appliance.config import load_settings  # noqa: E402
from appliance.db import open_database, transaction  # noqa: E402
from appliance.parts import Parts  # noqa: E402
from appliance.web import accounts  # noqa: E402
from scripts.bench_ingest import machine, write_section  # noqa: E402
from scripts.harness import free_port  # noqa: E402
from tests.helpers.series import ct_dataset  # noqa: E402

MIX = (("flagged", 0.03), ("not-flagged", 0.72), ("not-eligible", 0.15), ("failed", 0.02), ("queued", 0.08))


def seed(db_path: Path, header_file: Path, studies: int) -> None:
    conn = open_database(db_path).conn
    rng = random.Random(7)
    now = time.time()
    states = [state for state, share in MIX for _ in range(int(share * 1000))]
    with transaction(conn):
        conn.execute("INSERT INTO models (id, version, state, package_sha256, path, manifest, installed_at, "
                     "changed_at) VALUES ('head-ct-ich-demo', '1.0.0', 'active', ?, '/nonexistent', ?, ?, ?)",
                     ("0" * 64, '{"finding": "intracranial haemorrhage"}', now, now))
        for i in range(studies):
            study, series, sop = f"1.2.3.{i}", f"1.2.3.{i}.1", f"1.2.3.{i}.1.1"
            arrived = now - (studies - i) * 30.0
            state = rng.choice(states)
            triaged = state in ("flagged", "not-flagged")
            series_state = "triaged" if triaged else state
            reason = {"not-eligible": "modality MR not in ['CT']", "failed": "decode failed: truncated pixels"}.get(state)
            conn.execute("INSERT INTO instances (sop_instance_uid, study_instance_uid, series_instance_uid, "
                         "sop_class_uid, transfer_syntax_uid, size_bytes, sha256, path, calling_ae, association_id, "
                         "received_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                         (sop, study, series, "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1", 1, "0" * 64,
                          str(header_file), "CT_1", "bench", arrived))
            conn.execute("INSERT INTO series (series_instance_uid, study_instance_uid, modality, body_part, "
                         "series_description, calling_ae, instances, state, reason, generation, first_received_at, "
                         "last_received_at, updated_at, flag, score, model) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                         (series, study, "MR" if state == "not-eligible" else "CT", "HEAD", "CT HEAD", "CT_1", 1,
                          series_state, reason, 1, arrived, arrived, arrived + 2,
                          (1 if state == "flagged" else 0) if triaged else None,
                          (0.9 if state == "flagged" else 0.1) if triaged else None,
                          "head-ct-ich-demo 1.0.0" if triaged else None))
            job = conn.execute("INSERT INTO jobs (series_instance_uid, study_instance_uid, generation, state, "
                               "priority, created_at, updated_at) VALUES (?,?,1,?,?,?,?)",
                               (series, study, "queued" if state == "queued" else ("failed" if state == "failed"
                                                                                  else "done"),
                                10 if i % 50 == 0 else 0, arrived, arrived + 2)).lastrowid
            if triaged:
                conn.execute("INSERT INTO inference_results (job_id, role, series_instance_uid, study_instance_uid, "
                             "generation, model_id, model_version, score, threshold, flag, audit_seq, created_at) "
                             "VALUES (?, 'active', ?, ?, 1, 'head-ct-ich-demo', '1.0.0', ?, 0.5, ?, 0, ?)",
                             (job, series, study, 0.9 if state == "flagged" else 0.1, int(state == "flagged"),
                              arrived + 2))


def timed(client: httpx.Client, paths: list[str]) -> list[float]:
    out = []
    for path in paths:
        start = time.perf_counter()
        answer = client.get(path)
        out.append((time.perf_counter() - start) * 1000)
        answer.raise_for_status()
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--studies", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        header = data / "header.dcm"
        ds = ct_dataset("1.2.3", "1.2.3.1", 0, size=8)
        ds.PatientName, ds.PatientID, ds.AccessionNumber = "Bench^Patient", "BENCH-1", "ACC-1"
        ds.save_as(header, enforce_file_format=True)
        started = time.perf_counter()
        seed(data / "appliance.db", header, args.studies)
        print(f"seeded {args.studies} studies in {time.perf_counter() - started:.1f} s", flush=True)
        token = accounts.create_token(open_database(data / "appliance.db").conn, "radiologist", "bench", "bench")
        port = free_port()
        env = {**os.environ, "APPLIANCE_DATA_DIR": str(data), "APPLIANCE_WEB_PORT": str(port),
               "APPLIANCE_WEB_BIND_ADDRESS": "127.0.0.1", "APPLIANCE_ALLOW_UNENCRYPTED": "true"}  # a scratch folder
        started = time.perf_counter()  # the worker's upkeep builds the summary the pages read
        Parts(load_settings(environ=env)).upkeep().run_due(time.time())
        summary_s = time.perf_counter() - started
        server = subprocess.Popen([sys.executable, "-m", "appliance.cli", "web"], cwd=REPO, env=env)
        try:
            client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120,
                                  headers={"Authorization": f"Bearer {token}"})
            deadline = time.monotonic() + 120
            while True:
                try:
                    client.get("/healthz")
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            rng = random.Random(1)
            pages = [f"/worklist?page={rng.randint(1, 200)}" for _ in range(args.requests)]
            timed(client, pages)  # warm the page cache, as a day of use would
            results = {
                "worklist, first page": timed(client, ["/worklist"] * args.requests),
                "worklist, pages 1-200": timed(client, pages),
                "worklist, state=failed": timed(client, ["/worklist?state=failed"] * args.requests),
                "/api/studies (50 rows)": timed(client, ["/api/studies"] * args.requests),
            }
        finally:
            server.terminate()
            server.wait(timeout=30)
    lines = [f"Measured on {machine()}; {args.studies:,} studies, {args.requests} requests each, one client, "
             f"`appliance web` in its own process, 50 rows a page.", "",
             f"The worker's upkeep building the per-study summary the pages read, from every series row, on a "
             f"database that has none yet (kept across restarts; afterwards only changed studies are recomputed): "
             f"{summary_s:.1f} s", "",
             "| request | p50 ms | p95 ms |", "|---|---|---|"]
    for name, values in results.items():
        lines.append(f"| {name} | {statistics.median(values):.1f} | {percentile(values, 0.95):.1f} |")
    report = "\n".join(lines)
    print(report)
    if args.write:
        write_section(REPO / "docs" / "benchmarks.md", "## Web", report + "\n\nTarget: p95 under 150 ms.")


if __name__ == "__main__":
    main()
