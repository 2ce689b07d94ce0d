"""Build a model package from its spec: data, training, variants, evaluation, operating
point, the sealed test, card and signature, every step tracked in MLflow.

:func:`build` runs, in order:

1. **Data.** The development dataset from the cache (:mod:`training.datasets`, generated
   once), its model inputs cached as float16 for training
   (:mod:`training.data.input_cache`), split by patient into train, val, calibration and
   gate, with every series of the held-out scanner style in external.
2. **Training** on train (val only watched), ONNX export and parity, the quantised
   variants the spec asks for.
3. **Scoring.** Every series of calibration, gate and external decoded from its DICOM files
   as the box does (float32) and scored by every variant (:mod:`training.score`).
4. **Calibration and operating point** on calibration, FP32: Platt scaling fitted on
   in-indication against negative series, then the threshold that meets the sensitivity
   target and the flag-rate bound together
   (:func:`training.evaluate.choose_operating_point`).
5. **Variant gate.** A quantised variant ships only if its flags agree with FP32 on the
   gate split (>= :data:`GATE_MIN_AGREEMENT`, no finding FP32 flags unflagged), it meets on
   calibration what FP32 met there, and its heat map points where FP32's does.
6. **The sealed test set**, read once (:mod:`training.sealed`: a line in the ledger), by
   every kept variant and again under the stability perturbations; the targets judged
   for every variant (:func:`verdict`). A release (``release=True``) is built only from
   committed code and a registered sealed set.
7. **Package.** Golden cases from the gate split, the drift reference from train, the
   manifest, the card (:mod:`training.card`), the signature, verification as the box does.
8. **Mixed stream.** The signed package installed on a real appliance that receives a fresh
   10 %-prevalence stream over DICOM (:mod:`training.mixed_stream`); its flag rate goes into
   the card, and the package is signed again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from appliance.drift.histograms import merge
from appliance.models.manifest import Calibration
from appliance.models.package import verify_package
from training import export, quantize
from training.backends import OPENVINO_OPTIONS, Runner, onnxruntime_runner, openvino_runner
from training.card import model_card
from training.constraints import input_constraints
from training.data.folder import Images, SeriesJob, series_jobs, split_by_patient
from training.data.input_cache import cache_dir, cache_inputs
from training.datasets import Dataset, materialise
from training.demo import DemoSpec, replace_spec
from training.drift import reference_thresholds
from training.errors import BuildError, IntakeError
from training.evaluate import (choose_operating_point, flip_share, operating_metrics, platt_fit, subgroup_metrics,
                               variant_agreement)
from training.indication import Indication
from training.intake import Intake, intake, patients_of, shared_patients, write_card
from training.lineage import code_revision, require_clean_tree
from training.machine import cpu_flags, machine
from training.mixed_stream import mixed_stream_through_appliance
from training.package import CAM_OVERLAP_FLOOR, golden, golden_dicom, golden_series, load_private_key, write_package
from training.score import STABILITY, SeriesScores, score_all
from training.sealed import LEDGER, SealedSet, ledger_lines, open_sealed, sealed_read
from training.tracking import Run
from training.train import config_dict, save_checkpoint, train

#: A variant ships only if its flags agree with FP32 on this share of the gate split.
GATE_MIN_AGREEMENT = 0.99
#: The reference variant every other is compared with.
REFERENCE = ("onnxruntime", "fp32")
#: The development splits, in the order patients are dealt out (the held-out scanner
#: style goes to ``external``): train fits the weights, val is watched, calibration fits
#: the calibration and the operating point, gate decides which variants ship.
DEV_SPLITS = ("train", "val", "calibration", "gate")
#: Splits scored from DICOM through the box's path.
SCORED_SPLITS = ("calibration", "gate", "external")
INT8_NOTE = (
    "ONNX Runtime INT8 is QDQ, per-channel weights with `reduce_range` (7-bit, [-64, 64]), UINT8 "
    "activations (U8S8). Without VNNI (AVX2, AVX-512 without VNNI) ONNX Runtime's U8S8 kernels use "
    "`VPMADDUBSW`, which sums two u8 x s8 products in a saturating int16; the worst pair sum of this "
    "model's weights is {bound} (<= 32767 means no input saturates). In both INT8 variants only the "
    "convolutions between the first one and the CAM head are quantised: the image, the activation map "
    "and the pooling into the score stay FP32.")


def key(backend: str, precision: str) -> str:
    """``backend/precision``, the name of a variant in metrics and the manifest (pure)."""
    return f"{backend}/{precision}"


def indication_of(row: dict[str, str], column: str = "indication") -> str:
    """A series' class: the indication ``column``, else ``in-indication`` for label 1 and
    ``negative`` for 0 (a folder labelled before indications existed)."""
    if row.get(column):
        return Indication(row[column]).value
    return (Indication.IN if row["label"] == "1" else Indication.NEGATIVE).value


def _finite(value):
    """``value`` with every non-finite float replaced by ``None`` (strict JSON)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def verdict(metrics: dict, stability: dict, spec: DemoSpec) -> dict:
    """Whether one variant meets the spec's targets on the sealed test set (pure):
    ``{"meets": bool, "misses": [what fell short, in words]}``."""
    t = spec.targets
    misses = []
    sens, specificity = metrics["sensitivity"], metrics["specificity"]
    if not sens["estimable"] or sens["value"] < t.sensitivity or sens["ci95"][0] < t.sensitivity_lower:
        misses.append(f"sensitivity {_p(sens)} (target >= {t.sensitivity:g}, lower bound >= {t.sensitivity_lower:g})")
    if (not specificity["estimable"] or specificity["value"] < t.specificity
            or specificity["ci95"][0] < t.specificity_lower):
        misses.append(f"specificity {_p(specificity)} (target >= {t.specificity:g}, lower bound >= {t.specificity_lower:g})")
    table = metrics["at_prevalence"]
    rate = table[f"{t.prevalence:.2f}"]["flag_rate"]["value"] if table else None
    if rate is None or rate > t.max_flag_rate:
        misses.append(f"flag rate at {t.prevalence:.0%} prevalence {rate if rate is None else round(rate, 3)} "
                      f"(target <= {t.max_flag_rate:g})")
    for name, flips in stability.items():
        if flips["k"] / max(flips["n"], 1) > t.max_flip:
            misses.append(f"{name} perturbation flips {flips['k']} of {flips['n']} flags (target <= {t.max_flip:.0%})")
    return {"meets": not misses, "misses": misses}


def _asdict(config) -> dict | None:
    return asdict(config) if config is not None else None


def _p(p: dict) -> str:
    return f"{p['k']}/{p['n']}" + (f" = {p['value']:.3f} ({p['ci95'][0]:.3f}-{p['ci95'][1]:.3f})" if p["estimable"] else "")


def data_summary(rows: list[dict[str, str]], scanners: list[str], column: str = "indication",
                 subgroups: tuple[str, ...] = ("lesion_type", "size_group", "contrast", "mimic", "acquisition")) -> dict:
    """Counts of a dataset's series per class (the indication ``column``), per subgroup
    column and per scanner, computed from its labels (pure): the card quotes these, never
    the generator's intended shares."""
    out: dict[str, dict[str, int]] = {"indication": Counter(indication_of(r, column) for r in rows)}
    for column in (c for c in subgroups if c != "scanner"):
        values = [r.get(column, "") for r in rows]
        if any(values):
            out[column] = Counter(v for v in values if v)
    out["scanner"] = Counter(scanners)
    return {k: dict(sorted(v.items())) for k, v in out.items()}


class Builder:
    """One build's state as it goes; :func:`build` drives it. Methods are the pipeline's
    steps, each logging what it did and how long it took."""

    def __init__(self, spec: DemoSpec, out_dir: Path, key_path: Path, work_dir: Path, *, release: bool,
                 ledger: Path, datasets: Path | None, tracking_uri: str | None, command: str,
                 log: Callable[[str], None], run_name: str | None = None, data: Path | None = None):
        self.spec, self.out_dir, self.key_path, self.work_dir = spec, Path(out_dir), Path(key_path), Path(work_dir)
        self.release, self.ledger, self.datasets, self.command, self._log = release, ledger, datasets, command, log
        self.data_folder = Path(data) if data is not None else None
        self.model_dir = self.work_dir / "model"
        self.model_dir.mkdir(parents=True, exist_ok=True)
        self.t0 = time.perf_counter()
        self.timings: dict[str, float] = {}
        self.revision = require_clean_tree() if release else code_revision()
        self.run = Run(spec.id, run_name or f"build {spec.version}" + (" (release)" if release else ""), tracking_uri,
                       tags={"code_revision": self.revision or "unknown", "command": command,
                             "release": str(release), "version": spec.version})

    def log(self, message: str) -> None:
        self._log(f"[{self.spec.id}] {message}")

    def timed(self, name: str, started: float) -> None:
        self.timings[name] = round(time.perf_counter() - started, 1)

    # 1. data ---------------------------------------------------------------------------
    def data(self) -> None:
        started = time.perf_counter()
        spec = self.spec
        if self.data_folder is not None:
            self.dev = Dataset(self.data_folder, "")
        elif spec.generator is not None:
            self.dev = materialise(spec.generator, self.datasets, self.log)
        else:
            raise BuildError(f"{spec.id}: the spec has no [generator]: give the labelled folder to build from (--data)")
        if self.dev.generated_seconds is not None:
            self.timings["dataset_generation"] = round(self.dev.generated_seconds, 1)
        self.intake = self._intake()
        self.timings["intake"] = round(time.perf_counter() - started, 1)
        jobs = series_jobs(self.dev.path, spec.input)
        self.splits: dict[str, list[SeriesJob]]
        if spec.split_file is not None:
            self.splits = {name: [j for j in jobs if self.intake.splits[j.series_uid] == name]
                           for name in (*DEV_SPLITS, "external")}
        else:
            self.splits = split_by_patient(jobs, spec.train.seed, spec.fractions, names=DEV_SPLITS,
                                           external_scanner=spec.external_scanner)
        self.retired_card: list[dict] = []
        self.retired_sha256 = [self._retire(retired) for retired in spec.retired]
        self.dataset_card = {**self.intake.card(), "split": {k: len(v) for k, v in self.splits.items()},
                             **({"retired_sets_in_train": self.retired_card} if spec.retired else {})}
        external = self.splits["external"]
        self.external_total = len(external)
        if spec.external_cap is not None and len(external) > spec.external_cap:
            keep = set(np.random.default_rng(spec.train.seed).permutation(len(external))[:spec.external_cap].tolist())
            self.splits["external"] = [j for i, j in enumerate(external) if i in keep]
        self.classes = {name: np.array([self.indication(j.row) for j in split]) for name, split in self.splits.items()}
        self.log("data: " + ", ".join(f"{k} {len(v)} series ({self._class_counts(k)})" for k, v in self.splits.items()))
        self.timed("data", started)

    def _retire(self, retired: SealedSet) -> str:
        """Add a spent sealed set's series to the train split (the external scanner's stay
        out); return its content hash, checked against the registered one."""
        dataset = open_sealed(retired, self.datasets, self.log)
        jobs = series_jobs(dataset.path, self.spec.input)
        joined = [j for j in jobs if j.scanner != self.spec.external_scanner]
        self.splits["train"] = self.splits["train"] + joined
        self.retired_card.append({"name": retired.name, "sha256": dataset.sha256, "series": len(joined),
                                  "held_out_external": len(jobs) - len(joined)})
        self.log(f"retired sealed set {retired.name} (sha256 {dataset.sha256}): {len(joined)} series join the train "
                 f"split, {len(jobs) - len(joined)} of the external scanner stay out")
        return dataset.sha256

    def _intake(self) -> Intake:
        """Intake checks on the development folder (and no patient of the sealed folder in
        it); the development set's content hash comes from here for a folder build. A
        dataset the spec's generator wrote is not decoded here (:func:`training.intake.inspect_file`):
        the build decodes its files anyway, and a head-CT set's decode alone takes half an hour
        on two cores."""
        spec = self.spec
        found = intake(self.dev.path, spec.input, indication_column=spec.indication_column, subgroups=spec.subgroups,
                       split_file=spec.split_file, sha256=self.dev.sha256 or None,
                       decode=self.data_folder is not None)
        if not self.dev.sha256:
            self.dev = Dataset(self.dev.path, found.sha256)
        if spec.sealed.folder is not None:
            shared = shared_patients(found, patients_of(spec.sealed.folder))
            if shared:
                raise IntakeError(f"{self.dev.path}: {len(shared)} series are of patients also in the sealed set "
                                  f"{spec.sealed.folder} (first: series {shared[0]}); a patient must be in one of them")
        card = found.card()
        self.log(f"intake: {card['series']} series, {card['files']} files, {card['patients']} patients, "
                 f"classes {card['indication']}, content sha256 {found.sha256}")
        return found

    def indication(self, row: dict[str, str]) -> str:
        return indication_of(row, self.spec.indication_column)

    def constraints(self) -> dict | None:
        """The package's input constraints: the generator's declared ranges when the data
        came from the spec's generator, else the ranges intake found; none when the spec
        says so (test fixtures fed with series of other sizes)."""
        if not self.spec.constrain_inputs:
            return None
        if self.data_folder is None and self.spec.generator is not None:
            return input_constraints(self.spec.generator)
        return self.intake.input_constraints(self.spec.input)

    def _class_counts(self, split: str) -> str:
        c = Counter(self.classes[split])
        return f"{c[Indication.IN]} in-indication, {c[Indication.SUB]} sub-indication, {c[Indication.NEGATIVE]} negative"

    # 2. training and variants ----------------------------------------------------------
    def fit(self) -> None:
        started = time.perf_counter()
        spec = self.spec
        watched = self.splits["train"] + self.splits["val"]
        # A given folder is never written to: its inputs are cached in the work folder.
        where = self.dev.path if self.data_folder is None else self.work_dir
        cached = cache_inputs(watched, cache_dir(where, spec.input, spec.thin_mm), spec.thin_mm, log=self.log)
        self.timings["input_cache"] = round(time.perf_counter() - started, 1)
        train_cached, val_cached = cached[:len(self.splits["train"])], cached[len(self.splits["train"]):]
        self.train_drift = [c.drift for c in train_cached]
        train_images, val_images = Images.from_cached(train_cached), Images.from_cached(val_cached)
        started = time.perf_counter()
        self.log(f"training on {len(train_images)} images ({int(train_images.labels.sum())} positive), "
                 f"{len(val_images)} validation images")
        self.model, self.history = train(train_images, val_images, spec.train, spec.aggregation.apply,
                                         log=lambda r: (self.log(json.dumps(r)), self.run.metrics(
                                             {k: v for k, v in r.items() if k != "epoch"}, step=r["epoch"])))
        self.timed("training", started)
        del val_images
        save_checkpoint(self.model_dir / "model.pt", self.model, {"id": spec.id, "history": self.history})
        started = time.perf_counter()
        onnx_fp32 = export.export_onnx(self.model, self.model_dir / "fp32.onnx", spec.input.channels, spec.input.size)
        self.parity = export.parity(self.model, onnx_fp32, train_images.take(np.arange(min(32, len(train_images)))))
        calib = train_images.take(quantize.calibration_indices(train_images.labels, spec.calibration_images,
                                                                spec.train.seed))
        del train_images
        self.variants: dict[tuple[str, str], tuple[list[Path], Runner]] = {REFERENCE: ([onnx_fp32], onnxruntime_runner(onnx_fp32))}
        for backend, precision in spec.variants:
            if (backend, precision) == REFERENCE:
                continue
            if (backend, precision) == ("onnxruntime", "int8"):
                path = quantize.onnx_int8(onnx_fp32, self.model_dir / "int8.onnx", calib)
                self.variants[(backend, precision)] = ([path], onnxruntime_runner(path))
            elif backend == "openvino":
                xml = (quantize.openvino_int8(onnx_fp32, self.model_dir / "openvino-int8.xml", calib)
                       if precision == "int8" else quantize.openvino_fp32(onnx_fp32, self.model_dir / "openvino-fp32.xml"))
                self.variants[(backend, precision)] = ([xml, xml.with_suffix(".bin")], openvino_runner(xml))
        self.saturation_bound = (quantize.u8s8_pair_bound(self.variants[("onnxruntime", "int8")][0][0])
                                 if ("onnxruntime", "int8") in self.variants else None)
        self.timed("export_and_quantisation", started)

    # 3. scoring ------------------------------------------------------------------------
    def runners(self) -> dict[str, Runner]:
        return {key(*v): runner for v, (_, runner) in self.variants.items()}

    def score_dev(self) -> None:
        started = time.perf_counter()
        self.raw: dict[str, list[SeriesScores]] = {}
        for split in SCORED_SPLITS:
            self.raw[split] = score_all(self.spec.input, self.spec.aggregation, [j.paths for j in self.splits[split]],
                                        self.runners())
            self.log(f"scored {split}: {len(self.raw[split])} series")
        self.timed("scoring_dev", started)

    # 4. calibration and operating point -----------------------------------------------
    def operating_point(self) -> None:
        spec, t = self.spec, self.spec.targets
        ref = key(*REFERENCE)
        raw = np.array([s.scores[ref] for s in self.raw["calibration"]])
        classes = self.classes["calibration"]
        scored = classes != Indication.SUB
        a, b = platt_fit((classes[scored] == Indication.IN).astype(int), raw[scored])
        self.calibration = Calibration(method="platt", a=a, b=b)
        self.op = choose_operating_point(classes, self.calibrated("calibration", ref), t.sensitivity,
                                         t.specificity, t.max_flag_rate, t.prevalence)
        self.threshold = self.op["threshold"]
        self.log(f"operating point {self.threshold:.4f} on calibration: sensitivity {self.op['sensitivity']:.3f}, "
                 f"specificity {self.op['specificity']:.3f}, flag rate at {t.prevalence:.0%} prevalence "
                 f"{self.op['flag_rate_at_prevalence']:.3f}" + ("" if self.op["meets_both"] else
                                                                 " (NO threshold meets the sensitivity target and the flag-rate bound together)"))
        del spec

    def calibrated(self, split: str, variant: str, scores: list[SeriesScores] | None = None,
                   perturbation: str | None = None) -> np.ndarray:
        rows = scores if scores is not None else self.raw[split]
        return np.array([self.calibration.apply(s.perturbed[perturbation][variant] if perturbation else s.scores[variant])
                         for s in rows])

    # 5. variant gate -------------------------------------------------------------------
    def gate(self) -> None:
        ref = key(*REFERENCE)
        flags = {split: self.calibrated(split, ref) >= self.threshold for split in ("calibration", "gate")}
        findings = {split: self.classes[split] != Indication.NEGATIVE for split in ("calibration", "gate")}
        self.kept: list[tuple[str, str]] = []
        self.excluded: list[dict] = []
        self.gate_report: list[dict] = []
        cal_ref = operating_metrics(self.classes["calibration"], self.calibrated("calibration", ref), self.threshold)
        for variant in self.variants:
            name = key(*variant)
            gate_scores = self.calibrated("gate", name)
            agreement = variant_agreement(flags["gate"], gate_scores >= self.threshold, findings["gate"])
            cal = operating_metrics(self.classes["calibration"], self.calibrated("calibration", name), self.threshold)
            reasons = []
            if agreement["agreement"] < GATE_MIN_AGREEMENT:
                reasons.append(f"flags agree with FP32 on {agreement['agreement']:.4f} of the gate split "
                               f"(minimum {GATE_MIN_AGREEMENT})")
            if agreement["lost_positives"]:
                reasons.append(f"unflags {agreement['lost_positives']} finding(s) FP32 flags on the gate split")
            if cal["tp"] < cal_ref["tp"]:
                reasons.append(f"finds {cal['tp']} of {cal['in_indication']} in-indication calibration series where "
                               f"FP32 finds {cal_ref['tp']}: below the rule the threshold was chosen by")
            if variant == ("onnxruntime", "int8") and (self.saturation_bound or 0) > quantize.INT16_MAX:
                reasons.append(f"U8S8 pair sum can reach {self.saturation_bound} > {quantize.INT16_MAX}: saturates without VNNI")
            ok = variant == REFERENCE or not reasons
            status = "kept" if ok else "left out: " + "; ".join(reasons)
            self.gate_report.append({"backend": variant[0], "precision": variant[1], "gate": agreement,
                                     "calibration": cal, "status": status})
            self.log(f"{name}: gate agreement {agreement['agreement']:.4f}, lost findings {agreement['lost_positives']}, "
                     f"calibration {cal['tp']}/{cal['in_indication']} ({status})")
            if ok:
                self.kept.append(variant)
            else:
                self.excluded.append({"backend": variant[0], "precision": variant[1], "reason": status})

    def dev_metrics(self) -> dict[str, dict[str, dict]]:
        return {split: {key(*v): operating_metrics(self.classes[split], self.calibrated(split, key(*v)), self.threshold,
                                                   seed=self.spec.train.seed) for v in self.kept}
                for split in SCORED_SPLITS}

    # 6. golden cases, drift, package ---------------------------------------------------
    def golden(self) -> None:
        """Golden cases from the gate split, or the calibration split when FP32 gets no gate
        series right (a small gate split; never the sealed set): the series FP32 gets right
        by the widest margin on each side, checked on the box end to end."""
        started = time.perf_counter()
        spec = self.spec
        for split in ("gate", "calibration"):
            scores = self.calibrated(split, key(*REFERENCE))
            chosen = golden_series(self.classes[split], scores, self.threshold, spec.golden_per_class)
            if chosen:
                break
        else:
            raise BuildError(f"no golden case: at threshold {self.threshold:.4f} the FP32 model gets no gate or "
                             "calibration series right (no in-indication series flagged, no negative left)")
        source = self.splits[split]
        loaded = [source[i].load() for i in chosen]
        variants = {key(*v): (v[1], self.variants[v][1]) for v in self.kept}
        golden_bytes, self.tolerances, self.golden_report = golden(loaded, scores[chosen], self.variants[REFERENCE][1],
                                                                   self.threshold, variants)
        for v in list(self.kept):
            overlap = self.golden_report["measured"][key(*v)]["cam_top_overlap"]
            if overlap < CAM_OVERLAP_FLOOR:
                reason = (f"left out: heat map points elsewhere than FP32 on the golden cases (top-region overlap "
                          f"{overlap:.2f} < {CAM_OVERLAP_FLOOR})")
                self.kept.remove(v)
                self.excluded.append({"backend": v[0], "precision": v[1], "reason": reason})
                next(r for r in self.gate_report if (r["backend"], r["precision"]) == v)["status"] = reason
                self.log(f"{key(*v)}: {reason}")
        variants = {key(*v): (v[1], self.variants[v][1]) for v in self.kept}
        golden_files, self.golden_cases, self.series_atol, series_report = golden_dicom(
            loaded, [source[i].paths for i in chosen], spec.input, spec.aggregation, self.calibration, self.threshold,
            variants)
        self.golden_report["dicom"] = series_report
        self.files: dict[str, bytes] = {"golden/golden.npz": golden_bytes, **golden_files}
        self.timed("golden", started)

    def drift_reference(self) -> None:
        drifts = self.train_drift
        drift = {"feature_set": self.spec.input.kind, "histograms": merge(drifts),
                 "thresholds": reference_thresholds(drifts, seed=self.spec.train.seed)}
        self.files["drift/reference.json"] = json.dumps(drift, sort_keys=True).encode()

    # 7. the sealed test set ------------------------------------------------------------
    def sealed(self) -> None:
        started = time.perf_counter()
        spec = self.spec
        model_sha = hashlib.sha256((self.model_dir / "fp32.onnx").read_bytes()).hexdigest()
        self.earlier_reads = [line for line in ledger_lines(self.ledger) if line["sealed_set"] == spec.sealed.name]
        with sealed_read(spec.sealed, release=self.release, model=f"{spec.id} {spec.version}", code_revision=self.revision,
                         model_sha256=model_sha, purpose="release" if self.release else "build", ledger=self.ledger,
                         root=self.datasets, log=self.log) as reading:
            self.sealed_sha256 = reading.dataset.sha256
            jobs = series_jobs(reading.dataset.path, spec.input)
            self.test_classes = np.array([self.indication(j.row) for j in jobs])
            self.test_attributes = [{**j.row, "scanner": j.row.get("scanner") or ""} for j in jobs]
            runners = {key(*v): self.variants[v][1] for v in self.kept}
            scores = score_all(spec.input, spec.aggregation, [j.paths for j in jobs], runners, STABILITY,
                               seed=spec.train.seed,
                               progress=lambda d, n: d % 50 == 0 and self.log(f"sealed set: {d} of {n} series"))
            self.test_scores = {name: self.calibrated("", name, scores) for name in runners}
            self.metrics["test"] = {name: operating_metrics(self.test_classes, self.test_scores[name], self.threshold,
                                                            seed=spec.train.seed) for name in runners}
            self.stability = {}
            for name in runners:
                flags = self.test_scores[name] >= self.threshold
                self.stability[name] = {p.name: flip_share(flags, self.calibrated("", name, scores, p.name) >= self.threshold)
                                        for p in STABILITY}
            self.verdicts = {name: verdict(self.metrics["test"][name], self.stability[name], spec) for name in runners}
            reading.figures = "; ".join(
                f"{name}: sensitivity {m['tp']}/{m['in_indication']}, specificity {m['tn']}/{m['negatives']}, "
                f"sub-indication flagged {m['sub_flagged']}/{m['sub_indication']}, "
                f"flips {self.stability[name]['noise']['k']}+{self.stability[name]['relative']['k']}, "
                f"{'meets' if self.verdicts[name]['meets'] else 'misses'} target"
                for name, m in self.metrics["test"].items())
        self.subgroups = {name: subgroup_metrics(self.test_classes, self.test_attributes, self.test_scores[name],
                                                 self.threshold, spec.subgroups) for name in runners}
        self.sealed_summary = data_summary(self.test_attributes, [a.get("scanner", "") for a in self.test_attributes],
                                           spec.indication_column, spec.subgroups)
        for name, v in self.verdicts.items():
            self.log(f"sealed test, {name}: {'MEETS' if v['meets'] else 'DOES NOT MEET'} its target"
                     + ("" if v["meets"] else ": " + "; ".join(v["misses"])))
        self.timed("sealed_test", started)

    # 8. manifest, card, signature ------------------------------------------------------
    def package(self) -> Path:
        spec = self.spec
        cam_size = spec.input.size // self.model.stride
        ref = key(*REFERENCE)
        self.lineage = {"parent_version": spec.parent_version, "dataset_manifest_sha256": self.dev.sha256,
                        "sealed_test_sha256": self.sealed_sha256, "code_revision": self.revision,
                        "retired_sealed_sha256": self.retired_sha256}
        operating_point = {"threshold": self.threshold, "target_sensitivity": spec.targets.sensitivity,
                           "validation_sensitivity": self.op["sensitivity"],
                           "validation_specificity": self.op["specificity"], "chosen_on": "calibration split",
                           "max_flag_rate": spec.targets.max_flag_rate, "prevalence": spec.targets.prevalence,
                           "meets_flag_rate": self.op["meets_both"]}
        variants = []
        for v in self.kept:
            paths, _ = self.variants[v]
            names = [f"model/{p.name}" for p in paths]
            self.files.update({n: p.read_bytes() for n, p in zip(names, paths)})
            test_auc = self.metrics["test"][key(*v)]["auc"]
            variants.append({"backend": v[0], "precision": v[1], "files": names,
                             "test_auc": test_auc if test_auc is not None else 0.0,
                             "tolerance": {**self.tolerances[key(*v)], "series_atol": self.series_atol[key(*v)]},
                             "options": OPENVINO_OPTIONS if v[0] == "openvino" else {}})
        self.manifest = {
            "format_version": 1, "id": spec.id, "version": spec.version, "task": "binary-triage",
            "finding": spec.finding, "labels": list(spec.labels), "input": spec.input.model_dump(),
            "outputs": {"score": "score", "cam": "cam", "cam_size": cam_size},
            "aggregation": spec.aggregation.model_dump(exclude_none=True), "calibration": self.calibration.model_dump(),
            "operating_point": operating_point, "variants": variants, "excluded_variants": self.excluded,
            "golden": "golden/golden.npz", "drift_reference": "drift/reference.json", "model_card": "MODEL_CARD.md",
            **({"input_constraints": self.constraints()} if spec.constrain_inputs else {}),
            **({"finding_code": list(spec.finding_code)} if spec.finding_code else {}),
            "golden_series": self.golden_cases, "lineage": self.lineage, "metrics": _finite(self.metrics),
            "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "provenance": {"seed": spec.train.seed, "generator": _asdict(spec.generator),
                           "sealed_generator": _asdict(spec.sealed.generator), "train": config_dict(spec.train),
                           "dataset_card": self.dataset_card,
                           "proposed_routing": {**spec.routing, "model": spec.id} if spec.routing else None,
                           "onnx_opset": export.OPSET, "torch": torch.__version__, "parity_max_abs_diff": self.parity,
                           "machine": machine(), "cpu_flags": cpu_flags(), "command": self.command,
                           "targets": asdict(spec.targets), "verdicts": self.verdicts, "stability": self.stability},
        }
        del ref
        self.package_path = self.out_dir / f"{spec.id}-{spec.version}.tar"
        self.sign()
        return self.package_path

    def info(self) -> dict:
        """Everything the card says, in one dict (``training.card.model_card`` formats it)."""
        spec = self.spec
        return {
            "id": spec.id, "version": spec.version, "finding": spec.finding, "indication": spec.indication,
            "intended_use": spec.intended_use, "not_for": spec.not_for, "limits": spec.limits,
            "data_desc": spec.data_desc, "external_scanner": spec.external_scanner, "seed": spec.train.seed,
            "averaged_epochs": spec.train.average_last, "targets": asdict(spec.targets), "verdicts": self.verdicts, "stability": self.stability,
            "operating_point": self.op, "calibration": {"a": self.calibration.a, "b": self.calibration.b,
                                                        "n": int((self.classes["calibration"] != Indication.SUB).sum())},
            "metrics": self.metrics, "subgroups": self.subgroups, "box_variant": self.box_variant(),
            "split_counts": {k: self._class_counts(k) for k in self.splits},
            "split_sizes": {k: len(v) for k, v in self.splits.items()}, "external_total": self.external_total,
            "retired": self.retired_card,
            "sealed": {"name": spec.sealed.name, "sha256": self.sealed_sha256,
                       "seed": spec.sealed.generator.seed if spec.sealed.generator is not None else None,
                       "series": len(self.test_classes), "summary": self.sealed_summary,
                       "earlier_reads": self.earlier_reads},
            "dev_summary": data_summary([j.row for v in self.splits.values() for j in v],
                                        [j.scanner for v in self.splits.values() for j in v], spec.indication_column,
                                        spec.subgroups),
            "parameters": sum(p.numel() for p in self.model.parameters()), "input_desc": spec.input_desc(),
            "cam_size": spec.input.size // self.model.stride, "aggregation_desc": spec.aggregation_desc(),
            "objective": spec.objective_desc(), "epochs_run": len(self.history), "history": self.history,
            "train": config_dict(spec.train), "timings": self.timings, "machine": machine(), "cpu_flags": cpu_flags(),
            "command": self.command, "lineage": self.lineage, "variants": self.gate_report,
            "gate_min_agreement": GATE_MIN_AGREEMENT,
            "int8_note": INT8_NOTE.format(bound=self.saturation_bound) if self.saturation_bound is not None else "",
            "golden": self.golden_report, "golden_cpus": f"{machine()}; CPU flags {cpu_flags()}",
            "input_constraints": self.constraints(),
            "proposed_routing": {**spec.routing, "model": spec.id} if spec.routing else None,
            "finding_code": spec.finding_code,
            "mixed_stream": getattr(self, "stream", None), "build_seconds": time.perf_counter() - self.t0,
            "release": self.release, "synthetic": self.data_folder is None,
            "split_file": str(spec.split_file) if spec.split_file else None,
        }

    def box_variant(self) -> str:
        """The variant a box most likely runs: the fastest kept one (OpenVINO INT8 when it
        passed the gate); the box itself picks by timing at activation."""
        for preferred in (("openvino", "int8"), ("onnxruntime", "int8"), ("openvino", "fp32")):
            if preferred in self.kept:
                return key(*preferred)
        return key(*REFERENCE)

    def sign(self) -> None:
        """Write the model card and the dataset card beside it, and sign the package with
        both; verify as the box would."""
        card = model_card(self.info())
        (self.work_dir / "MODEL_CARD.md").write_text(card)
        self.dataset_card_files = write_card(self.work_dir, f"{self.spec.id} {self.spec.version} development data",
                                             self.dataset_card)
        write_package(self.package_path, self.manifest,
                      {**self.files, "MODEL_CARD.md": card.encode(),
                       "DATASET_CARD.md": self.dataset_card_files[0].read_bytes()},
                      load_private_key(self.key_path))
        verify_package(self.package_path, [self.key_path.with_suffix(".pub")])

    # 9. the mixed stream through the appliance -----------------------------------------
    def mixed_stream(self) -> None:
        if not self.spec.mixed_stream_series:
            return
        started = time.perf_counter()
        self.stream = mixed_stream_through_appliance(
            self.package_path, self.key_path.with_suffix(".pub"), self.spec, self.work_dir / "stream-box",
            self.datasets, log=self.log)
        self.log(f"mixed stream through the appliance: {self.stream['flagged']} of {self.stream['series']} flagged "
                 f"({self.stream['positives']} with a finding), {self.stream['not_analysed']['k']} not analysed, "
                 f"variant {self.stream['variant']}")
        self.timed("mixed_stream", started)
        # What the field's rates are held against (the hub's release page and promotion rule).
        self.manifest["metrics"]["mixed_stream"] = {self.stream["variant"]: {
            k: self.stream[k] for k in ("series", "flagged", "flag_rate", "not_analysed")}}
        self.sign()

    def track(self, info: dict) -> None:
        spec = self.spec
        self.run.params({"spec": {"id": spec.id, "version": spec.version, "input": spec.input.model_dump(),
                                  "aggregation": spec.aggregation.model_dump(exclude_none=True),
                                  "train": config_dict(spec.train), "fractions": list(spec.fractions),
                                  "thin_mm": spec.thin_mm, "targets": asdict(spec.targets),
                                  "variants": [key(*v) for v in spec.variants]},
                         "generator": _asdict(spec.generator), "sealed_generator": _asdict(spec.sealed.generator),
                         "data_folder": str(self.data_folder) if self.data_folder else None,
                         "finding_code": spec.finding_code, "routing": spec.routing, "split_file": spec.split_file,
                         "retired": [{"name": r.name, "sha256": r.sha256} for r in spec.retired]})
        self.run.tag("dataset_sha256", self.dev.sha256)
        self.run.tag("sealed_test_sha256", self.sealed_sha256)
        self.run.metrics({"metrics": _finite(self.metrics), "operating_point": self.op, "stability": self.stability,
                          "verdict": {k: v["meets"] for k, v in self.verdicts.items()}, "timings": self.timings,
                          "mixed_stream": {k: v for k, v in (info.get("mixed_stream") or {}).items()
                                           if k in ("series", "positives", "flagged")}})
        report = self.work_dir / "report.json"
        report.write_text(json.dumps(_finite(info), indent=2, default=float))
        for path in (self.work_dir / "MODEL_CARD.md", report, self.package_path, *self.dataset_card_files):
            self.run.artifact(path)


def build(spec: DemoSpec, out_dir: Path, key_path: Path, work_dir: Path, *, release: bool = False,
          card_dir: Path | None = None, ledger: Path = LEDGER, datasets: Path | None = None,
          tracking_uri: str | None = None, command: str = "", log: Callable[[str], None] = print,
          data: Path | None = None) -> dict:
    """Build, sign and verify the spec's package; return the build's ``info`` (also written
    as ``report.json`` in ``work_dir`` and logged to MLflow).

    ``data``: the labelled folder to build from; ``None``: the spec's generator's dataset
    (generated into the cache once). Either way it passes intake (:mod:`training.intake`)
    before anything is trained, and its dataset card is written beside the model card.

    ``release`` refuses uncommitted code and an unregistered sealed set, and records the read
    in the ledger as a release's.
    """
    b = Builder(spec, out_dir, key_path, work_dir, release=release, ledger=ledger, datasets=datasets,
                tracking_uri=tracking_uri, command=command, log=log, data=data)
    ok = False
    try:
        b.data()
        b.fit()
        b.score_dev()
        b.operating_point()
        b.gate()
        b.metrics = b.dev_metrics()
        b.golden()
        b.drift_reference()
        b.sealed()
        b.package()
        b.mixed_stream()
        info = b.info()
        info["total_seconds"] = time.perf_counter() - b.t0
        if card_dir is not None:
            Path(card_dir).mkdir(parents=True, exist_ok=True)
            (Path(card_dir) / f"{spec.id}.md").write_text((b.work_dir / "MODEL_CARD.md").read_text())
            (Path(card_dir) / f"{spec.id}.dataset.md").write_text((b.work_dir / "DATASET_CARD.md").read_text())
        b.track(info)
        ok = True
        b.log(f"package {b.package_path} verified in {info['total_seconds']:.0f} s; "
              + ", ".join(f"{k} {'meets' if v['meets'] else 'misses'} its target" for k, v in b.verdicts.items()))
        info["package"] = str(b.package_path)
        info["run_id"] = b.run.run_id
        return info
    finally:
        b.run.end(ok)


def experiment(spec: DemoSpec, work_dir: Path, *, name: str, train_share: float = 1.0, datasets: Path | None = None,
               tracking_uri: str | None = None, command: str = "", log: Callable[[str], None] = print,
               data: Path | None = None) -> dict:
    """Train and evaluate a variant of a spec on its development splits only, as an MLflow
    run: never the sealed set, no package. ``train_share`` keeps that share of the train
    patients (a fixed random subset: a learning curve's arm). ``data``: the labelled folder,
    as for :func:`build`.

    Returns the metrics of calibration, gate and external at the operating point chosen on
    calibration (FP32), the operating point itself, and the run id.
    """
    spec = replace_spec(spec, variants=(REFERENCE,))
    b = Builder(spec, work_dir, work_dir / "no-key", work_dir, release=False, ledger=Path(os.devnull), datasets=datasets,
                tracking_uri=tracking_uri, command=command, log=log, run_name=f"experiment {name}", data=data)
    ok = False
    try:
        b.data()
        if train_share < 1.0:
            patients = sorted({s.patient_id for s in b.splits["train"]})
            keep = set(np.random.default_rng(spec.train.seed).permutation(patients)[:round(train_share * len(patients))])
            b.splits["train"] = [s for s in b.splits["train"] if s.patient_id in keep]
            b.classes["train"] = np.array([b.indication(j.row) for j in b.splits["train"]])
        b.fit()
        b.score_dev()
        b.operating_point()
        b.kept = [REFERENCE]
        metrics = b.dev_metrics()
        b.run.params({"spec": {"input": spec.input.model_dump(), "train": config_dict(spec.train), "thin_mm": spec.thin_mm,
                               "fractions": list(spec.fractions)}, "train_share": train_share,
                      "train_series": len(b.splits["train"]), "generator": _asdict(spec.generator),
                      "retired": [{"name": r.name, "sha256": r.sha256} for r in spec.retired]})
        b.run.tag("dataset_sha256", b.dev.sha256)
        b.run.metrics({"metrics": _finite(metrics), "operating_point": b.op, "timings": b.timings})
        misses = [{"split": split, "score": float(score), **{k: j.row.get(k, "") for k in (
                       "size_group", "contrast", "lesion_hu", "acquisition", "scanner", "mimic")}}
                  for split in SCORED_SPLITS
                  for j, score, cls in zip(b.splits[split], b.calibrated(split, key(*REFERENCE)), b.classes[split])
                  if cls == Indication.IN and score < b.threshold]
        report = {"name": name, "metrics": _finite(metrics), "operating_point": b.op, "misses": misses,
                  "timings": b.timings, "history": b.history, "run_id": b.run.run_id}
        path = Path(work_dir) / "experiment.json"
        path.write_text(json.dumps(report, indent=2, default=float))
        b.run.artifact(path)
        ok = True
        return report
    finally:
        b.run.end(ok)
