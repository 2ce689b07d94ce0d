"""Ingest benchmark behind ``scripts/bench-ingest`` (see that file for usage)."""

from __future__ import annotations

import abc
import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.harness import REPO, SHARED_ANCHORS, free_port, stop_process, tcp_env, wait_for_port  # noqa: E402


def anchor_script() -> Path:
    script = SHARED_ANCHORS / "make_ct_study.py"
    if not script.is_file():
        sys.exit(f"bench-ingest: {script} not found (../shared/anchors next to the repository)")
    return script


def make_study(folder: Path, slices: int) -> Path:
    subprocess.run([sys.executable, str(anchor_script()), str(folder), str(slices)],
                   check=True, stdout=subprocess.DEVNULL)
    return folder


def send(port: int, ae_title: str, study: Path) -> float:
    started = time.perf_counter()
    subprocess.run(["storescu", "-aec", ae_title, "+sd", "127.0.0.1", str(port), str(study)],
                   env=tcp_env(), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


class Receiver(abc.ABC):
    """One receiving server, started fresh in its own temporary folder."""

    name = ""
    ae_title = "ANY"

    def __init__(self, work: Path):
        self.work = work
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @abc.abstractmethod
    def command(self) -> tuple[list[str], dict[str, str]]:
        """The argv and environment that start this receiver on ``self.port``."""

    def start(self) -> None:
        argv, env = self.command()
        self.process = subprocess.Popen(argv, env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        wait_for_port(self.port)
        time.sleep(0.3)

    def stop(self) -> None:
        if self.process:
            stop_process(self.process)


class DcmtkStorescp(Receiver):
    name = "dcmtk storescp"

    def command(self):
        (self.work / "rx").mkdir()
        return ["storescp", "-od", str(self.work / "rx"), str(self.port)], tcp_env()


class Orthanc(Receiver):
    name = "Orthanc"
    ae_title = "ORTHANC"

    def command(self):
        config = {
            "Name": "bench", "StorageDirectory": str(self.work / "storage"),
            "IndexDirectory": str(self.work / "index"), "DicomAet": "ORTHANC",
            "DicomPort": self.port, "HttpPort": free_port(), "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False, "DicomCheckCalledAet": False,
        }
        path = self.work / "orthanc.json"
        path.write_text(json.dumps(config))
        return ["Orthanc", str(path)], tcp_env()


class PynetdicomStorescp(Receiver):
    name = "pynetdicom storescp app"

    def command(self):
        (self.work / "rx").mkdir()
        return [sys.executable, "-m", "pynetdicom", "storescp", str(self.port), "-od",
                str(self.work / "rx")], dict(os.environ)


class Appliance(Receiver):
    name = "appliance (durable, indexed)"
    ae_title = "TRIAGE"

    def __init__(self, work: Path, venv: Path = REPO / ".venv"):
        super().__init__(work)
        self.venv = venv

    def command(self):
        env = {**os.environ, "APPLIANCE_DATA_DIR": str(self.work / "data"),
               "APPLIANCE_DICOM_PORT": str(self.port), "APPLIANCE_DICOM_BIND_ADDRESS": "127.0.0.1",
               "APPLIANCE_DICOM_PEERS": "*@127.0.0.1", "APPLIANCE_DICOM_MIN_FREE_DISK_MB": "256",
               "APPLIANCE_ALLOW_UNENCRYPTED": "true"}  # a benchmark's scratch folder
        return [str(self.venv / "bin" / "appliance"), "listener"], env

    def instances(self) -> int:
        status = subprocess.run(
            [str(REPO / ".venv" / "bin" / "appliance"), "status", "--json"], capture_output=True,
            text=True, check=True, env={**os.environ, "APPLIANCE_DATA_DIR": str(self.work / "data")},
        )
        return json.loads(status.stdout)["instances_received"]


#: A virtual environment with the appliance's own dependencies only, as a box installs it.
#: The development one (.venv) also holds the trainer's, and sqlite-utils imports pandas
#: (and with it pyarrow) whenever it can: 100 MiB more in every process of the box.
BOX_VENV = REPO / ".venv-box"


def box_venv() -> Path:
    """:data:`BOX_VENV`, made the first time (about a minute: pip takes the wheels it has)."""
    if not (BOX_VENV / "bin" / "appliance").exists():
        subprocess.run(["python3", "-m", "venv", str(BOX_VENV)], check=True)
        subprocess.run([str(BOX_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet", "-e", str(REPO)],
                       check=True)
    return BOX_VENV


def peak_rss_while(pid: int, action) -> tuple[float, int]:
    """Run ``action`` while sampling the process's resident set; return (peak MiB, result)."""
    peak, done = [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            try:
                for line in open(f"/proc/{pid}/status"):
                    if line.startswith("VmRSS:"):
                        peak[0] = max(peak[0], int(line.split()[1]))
            except FileNotFoundError:
                return
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = action()
    finally:
        done.set()
        sampler.join()
    return peak[0] / 1024, result


#: The CPU features INT8 and wide-vector kernels depend on, recorded with every figure.
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                if line.startswith("model name")), platform.processor())
    flags = set(next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), []))
    present = ", ".join(f for f in CPU_FLAGS if f in flags) or "none of " + "/".join(CPU_FLAGS)
    return f"{os.cpu_count()} cores ({cpu}; CPU flags {present}), {platform.system()} {platform.release()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--memory-slices", type=int, default=2000)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        work = Path(tmp)
        receivers = [DcmtkStorescp, Orthanc, PynetdicomStorescp, Appliance]
        times: dict[str, list[float]] = {cls.name: [] for cls in receivers}
        for run in range(args.repeat):
            study = make_study(work / f"study{run}", args.slices)  # fresh UIDs each run
            for cls in receivers:  # side by side: every receiver gets this run's study
                folder = work / f"{cls.__name__}-{run}"
                folder.mkdir()
                receiver = cls(folder)
                receiver.start()
                try:
                    times[cls.name].append(send(receiver.port, receiver.ae_title, study))
                    if isinstance(receiver, Appliance):
                        assert receiver.instances() == args.slices, "appliance lost instances"
                finally:
                    receiver.stop()
                    shutil.rmtree(folder)
            shutil.rmtree(study)

        big = make_study(work / "big", args.memory_slices)
        memory = {}  # venv -> (peak MiB, seconds, instances stored)
        for venv in (box_venv(), REPO / ".venv"):
            receiver = Appliance(work / f"memory-{venv.name}", venv)
            receiver.work.mkdir()
            receiver.start()
            assert receiver.process is not None
            port = receiver.port
            peak, seconds = peak_rss_while(receiver.process.pid, lambda: send(port, "TRIAGE", big))  # noqa: B023
            memory[venv] = (peak, seconds, receiver.instances())
            receiver.stop()

    median = {name: statistics.median(values) for name, values in times.items()}
    ours = median[Appliance.name]
    lines = [
        f"Machine: {machine()}.",
        f"Command: `scripts/bench-ingest --repeat {args.repeat} --slices {args.slices} "
        f"--memory-slices {args.memory_slices}` ({time.strftime('%Y-%m-%d')}).",
        "",
        f"{args.slices} CT slices, 512x512 int16 (anchor `make_ct_study.py`, fresh UIDs per run), one "
        "association from dcmtk `storescu +sd` over loopback with TCP_NODELAY=1; median of "
        f"{args.repeat} runs, each receiver started fresh.",
        "",
        "| receiver | median s | min s | max s | appliance / this |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, values in times.items():
        lines.append(f"| {name} | {median[name]:.3f} | {min(values):.3f} | {max(values):.3f} | "
                     f"{ours / median[name]:.2f} |")
    orthanc, storescp = median[Orthanc.name], median[DcmtkStorescp.name]
    lines += [
        "",
        f"The appliance, durable and indexed, takes {ours / orthanc:.2f}x Orthanc's time "
        f"({'faster' if ours < orthanc else 'slower'} than Orthanc; target: faster) and "
        f"{ours / storescp:.1f}x dcmtk storescp's (stretch target: within 2x).",
        "",
        f"Peak RSS of the appliance listener while receiving {args.memory_slices} slices "
        f"({memory[BOX_VENV][2]} stored, {memory[BOX_VENV][1]:.1f} s), installed as a box installs it "
        f"(`.venv-box`: the appliance's own dependencies): **{memory[BOX_VENV][0]:.0f} MiB** (target < 100 MiB). "
        f"From the development environment, which also holds the trainer's (sqlite-utils then imports "
        f"pandas): {memory[REPO / '.venv'][0]:.0f} MiB ({memory[REPO / '.venv'][2]} stored).",
    ]
    report = "\n".join(lines)
    print(report)
    if args.write:
        write_section(REPO / "docs" / "benchmarks.md", "## Ingest", report)


def write_section(path: Path, heading: str, body: str) -> None:
    """Replace (or append) the lead of one ``## `` section of a Markdown file: its text up
    to the next heading. Its ``### `` subsections (earlier runs, written by hand) stay."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    start = text.find(heading + "\n")
    section = f"{heading}\n\n{body}\n\n"
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        after = start + len(heading)
        ends = [i for i in (text.find("\n## ", after), text.find("\n### ", after)) if i >= 0]
        text = text[:start] + section + (text[min(ends) + 1:] if ends else "")
    path.write_text(text.rstrip("\n") + "\n")


if __name__ == "__main__":
    main()
