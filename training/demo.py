"""The two demo triage models and the pipeline that turns a dataset into a signed package.

:func:`build` runs: generate (synthetic, seeded) -> load with the appliance's
preprocessing -> split by patient -> train -> operating point on validation -> ONNX export
and parity -> INT8 / OpenVINO variants, each evaluated and gated against FP32 -> golden
outputs -> drift reference -> model card -> signed package -> verification.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
import re
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from appliance.drift.histograms import merge
from appliance.models.manifest import Aggregation, Calibration, InputSpec, Window
from appliance.models.package import verify_package
from appliance.triage.preprocess import HEAD_CT_WINDOWS
from training import export, quantize
from training.constraints import input_constraints
from training.backends import OPENVINO_OPTIONS, onnxruntime_runner, openvino_runner
from training.data.cr_synth import CR_EXTERNAL_STYLE, CR_IMAGE_STORAGE, CRConfig, generate_cr_dataset
from training.data.ct_synth import CT_EXTERNAL_STYLE, CT_IMAGE_STORAGE, CTConfig, generate_ct_dataset
from training.data.folder import Images, Series, load_folder, split_by_patient
from training.card import model_card
from training.drift import reference_thresholds
from training.mixed_stream import mixed_stream_flag_rate
from training.evaluate import (operating_metrics, platt_fit, roc_auc, sensitivity_specificity, series_scores,
                               subgroup_metrics, threshold_for_sensitivity, variant_agreement)
from training.package import (CAM_OVERLAP_FLOOR, GOLDEN_PER_CLASS, golden, golden_dicom, load_private_key,
                              write_package)
from training.train import TrainConfig, config_dict, save_checkpoint, train

DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
TARGET_SENSITIVITY = 0.95
#: Golden radiographs are ten-million-pixel images (about 6 MB each even compressed), so
#: a radiograph package ships one of each class.
RADIOGRAPH_GOLDEN_PER_CLASS = 1
#: A variant ships only if its flags agree with FP32 on this share of the gate split.
GATE_MIN_AGREEMENT = 0.99
INT8_NOTE = (
    "ONNX Runtime INT8 is QDQ, per-channel weights with `reduce_range` (7-bit, [-64, 64]), UINT8 "
    "activations (U8S8). Without VNNI (AVX2, AVX-512 without VNNI) ONNX Runtime's U8S8 kernels use "
    "`VPMADDUBSW`, which sums two u8 x s8 products in a saturating int16; full 8-bit weights reach "
    "255 x 254 = 64770 and clip (the cause of the 0.995 golden failure on an AVX2-only EPYC). The "
    "worst pair sum of this model's weights is {bound} <= 32767, so no input saturates on AVX2, "
    "AVX-512, AVX-512 VNNI or AMX; the kernels then compute the same integers everywhere. S8S8 was "
    "not chosen because ONNX Runtime's x86 kernels may run it through the same U8S8 path. In both INT8 variants "
    "only the convolutions between the first one and the CAM head are quantised: the image, the activation map "
    "and the pooling into the score stay FP32 (quantising them moved the chest scores by 0.5-0.7 logit).")


@dataclass(frozen=True)
class DemoSpec:
    """Everything that defines one demo model build."""

    id: str
    version: str
    finding: str
    labels: tuple[str, str]
    input: InputSpec
    aggregation: Aggregation
    generator: CTConfig | CRConfig
    train: TrainConfig
    fractions: tuple[float, float, float, float, float]
    intended_use: str
    data_desc: str
    limits: str
    #: Training images that calibrate quantisation: with 512 instead of 128 the INT8 scores'
    #: spread on the calibration split fell from 0.054 to 0.039 logit (head CT, OpenVINO).
    calibration_images: int = 512
    #: Write the training data's ranges as the manifest's ``input_constraints``. Quick
    #: builds (test fixtures fed with series of other sizes) leave them out.
    constrain_inputs: bool = True
    #: Scanner style (``Manufacturer ManufacturerModelName``) held out of every split but
    #: ``external``.
    external_scanner: str = ""
    #: The version this one replaces (lineage); ``None`` for a first version.
    parent_version: str | None = None
    #: Series in the mixed stream the signed package is run on after the build
    #: (:mod:`training.mixed_stream`, head CT only); 0 for none.
    mixed_stream_series: int = 0


#: Share of head-CT patients per slice thickness (0.625, 1, 1.25, 2.5, 3, 5 mm): thin series
#: have many slices, so they get fewer patients to keep a build within its time.
HEAD_CT_THICKNESS_WEIGHTS = (0.04, 0.04, 0.07, 0.25, 0.20, 0.40)
#: The head model reads every series as 5 mm slabs, the thickness radiologists review a
#: head CT at: a 0.625 mm slice alone has eight times the noise variance of a 5 mm one.
HEAD_CT_SLAB_MM = 5.0


def head_ct(quick: bool = False, seed: int = 20261127) -> DemoSpec:
    """Head-CT intracranial haemorrhage triage (slice model, series score = max)."""
    gen = CTConfig(n_patients=320, seed=seed, thickness_weights=HEAD_CT_THICKNESS_WEIGHTS) if not quick else CTConfig(
        n_patients=40, seed=seed, matrix=64, thicknesses_mm=(12.0,), coverage_mm=(100.0, 110.0))
    thicknesses = ", ".join(f"{t:g} mm" for t in gen.thicknesses_mm)
    return DemoSpec(
        id="head-ct-ich-demo", version="1.2.1" if not quick else "1.0.0",
        parent_version="1.2.0" if not quick else None,
        finding="intracranial haemorrhage (intraparenchymal or subdural)",
        labels=("no-haemorrhage", "haemorrhage"),
        input=InputSpec(kind="ct_slice", modalities=["CT"], body_part="HEAD", sop_class_uids=[CT_IMAGE_STORAGE],
                        channels=len(HEAD_CT_WINDOWS), size=128 if not quick else 32,
                        windows=[Window.from_tuple(w) for w in HEAD_CT_WINDOWS],
                        slab_mm=HEAD_CT_SLAB_MM),
        aggregation=Aggregation(method="max"), generator=gen,
        train=(TrainConfig(seed=seed, epochs=40, patience=8, min_epochs=20, negatives_per_positive=2.0,
                           hard_negative_share=0.5)
               if not quick else TrainConfig(seed=seed, epochs=8, min_epochs=8, widths=(8, 8, 8, 8))),
        fractions=(0.5, 0.1, 0.15, 0.1, 0.15) if not quick else (0.4, 0.15, 0.15, 0.15, 0.15),
        external_scanner=CT_EXTERNAL_STYLE,
        intended_use=("Worklist prioritisation of non-contrast axial head CT in adults: flags series that may "
                      "show intracranial haemorrhage so a radiologist reads them sooner. Never rules a study out; "
                      "every study is still read."),
        data_desc=(f"{gen.n_patients} synthetic patients from `training.data.ct_synth` (seed {gen.seed}), one axial "
                   f"series each, four fictional scanner styles (one held out for external validation), {gen.matrix}x{gen.matrix} "
                   f"slices, {gen.fov_mm[0]:g}-{gen.fov_mm[1]:g} mm FOV ({gen.fov_mm[0] / gen.matrix:.2f}-"
                   f"{gen.fov_mm[1] / gen.matrix:.2f} mm pixels), slice thickness {thicknesses} (noise as 1/sqrt(thickness); "
                   "the lesion averaged over the slice, partial volume), "
                   f"{gen.coverage_mm[0]:g}-{gen.coverage_mm[1]:g} mm coverage; half with an "
                   "intraparenchymal blob (6-35 mm) or subdural crescent (3-14 mm), 50-90 HU, a quarter low contrast "
                   "(50-58 HU); mimics in every fifth to tenth patient (calcifications of falx, pineal and choroid "
                   "plexus; dense venous sinuses; beam-hardening streaks; motion ghosts). Size buckets by rendered "
                   "volume: small < 1 mL, medium 1-5 mL, large >= 5 mL."),
        limits=("Slices are resized to the model's matrix, so a lesion under about 5 mm is a pixel or two at input. "
                "Inputs outside the training ranges (matrix, pixel spacing, slice thickness, slice count) are refused "
                "by the package's input constraints and answered with a 'not analysed' notice; contrast-enhanced "
                "studies and children are outside the intended use."),
        constrain_inputs=not quick, mixed_stream_series=0 if quick else 100,
    )


def chest_cr(quick: bool = False, seed: int = 20261128) -> DemoSpec:
    """Chest radiograph pneumothorax triage (one image per study)."""
    gen = CRConfig(n_patients=1600, seed=seed) if not quick else CRConfig(n_patients=48, seed=seed, columns=(64, 64))
    return DemoSpec(
        id="chest-cr-pneumothorax-demo", version="1.1.1" if not quick else "1.0.0",
        parent_version="1.1.0" if not quick else None, finding="pneumothorax",
        labels=("no-pneumothorax", "pneumothorax"),
        input=InputSpec(kind="radiograph", modalities=["CR", "DX"], body_part="CHEST",
                        sop_class_uids=[CR_IMAGE_STORAGE, DX_FOR_PRESENTATION], channels=1, size=192 if not quick else 32),
        aggregation=Aggregation(method="max"), generator=gen,
        train=(TrainConfig(seed=seed, epochs=15, patience=4, min_epochs=8, negatives_per_positive=1.0)
               if not quick else TrainConfig(seed=seed, epochs=8, min_epochs=8, widths=(8, 8, 8, 8), negatives_per_positive=1.0)),
        fractions=(0.5, 0.1, 0.15, 0.1, 0.15) if not quick else (0.4, 0.15, 0.15, 0.15, 0.15),
        external_scanner=CR_EXTERNAL_STYLE,
        intended_use=("Worklist prioritisation of adult PA chest radiographs: flags images that may show a "
                      "pneumothorax for earlier reading. Never rules a study out."),
        data_desc=(f"{gen.n_patients} synthetic PA chest radiographs from `training.data.cr_synth` (seed {gen.seed}), "
                   f"{gen.columns[0]}-{gen.columns[1]} columns (rows 1.0-1.2 times that), {gen.fov_mm[0]:g}-{gen.fov_mm[1]:g} mm "
                   f"wide ({gen.fov_mm[0] / gen.columns[1]:.2f}-{gen.fov_mm[1] / gen.columns[0]:.2f} mm pixels), "
                   "four fictional detectors (10/12/14-bit, one MONOCHROME1; one held out for external validation); "
                   "half with a pneumothorax-like collapse of one lung (air rim 4-50 mm without lung markings, pleural "
                   "line), a third apical only, a third subtle (rim barely darker than lung, faint line); a "
                   "half of all patients carry a mimic (skin fold, line or tube, scapular border). Size buckets by "
                   "rim width: small < 15 mm, medium 15-30 mm, large >= 30 mm."),
        limits="Single PA view only; lateral views, children and portable AP films are outside the training range.",
        constrain_inputs=not quick,
    )


DEMOS: dict[str, Callable[..., DemoSpec]] = {"head-ct": head_ct, "chest-cr": chest_cr}


def generate(spec: DemoSpec, data_dir: Path) -> None:
    """Write the spec's synthetic dataset to ``data_dir``."""
    if isinstance(spec.generator, CTConfig):
        generate_ct_dataset(spec.generator, data_dir)
    else:
        generate_cr_dataset(spec.generator, data_dir)


def load_splits(spec: DemoSpec, data_dir: Path) -> dict[str, list[Series]]:
    """Load a labelled folder with the spec's preprocessing and split it by patient into
    :data:`training.data.folder.SPLITS` plus ``external`` (the held-out scanner style)."""
    return split_by_patient(load_folder(data_dir, spec.input), spec.train.seed, spec.fractions,
                            external_scanner=spec.external_scanner)


def machine() -> str:
    """Short description of this machine's CPU."""
    name = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()}-core CPU ({name}), torch {torch.__version__}"


def dataset_manifest(data_dir: Path) -> bytes:
    """``sha256  relative/path`` of every file under ``data_dir``, sorted by path (the
    dataset's identity; its own sha256 goes into the lineage)."""
    data_dir = Path(data_dir)
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(data_dir).as_posix()}"
             for p in sorted(data_dir.rglob("*")) if p.is_file()]
    return ("\n".join(lines) + "\n").encode()


def code_revision() -> str | None:
    """``git rev-parse HEAD`` of the code building the package (``+dirty`` with uncommitted
    changes); ``None`` outside a git checkout."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True, timeout=60).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def cpu_flags() -> str:
    """The x86 integer-dot-product features of this CPU (what INT8 kernels depend on)."""
    try:
        flags = set(re.findall(r"\b(avx2|avx512_vnni|avx_vnni|amx_int8)\b", Path("/proc/cpuinfo").read_text()))
    except OSError:
        flags = set()
    return ", ".join(sorted(flags)) or "none of avx2/avx512_vnni/avx_vnni/amx_int8"


def _finite(value):
    """``value`` with every non-finite float replaced by ``None`` (strict JSON for the manifest)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _variant_key(backend: str, precision: str) -> str:
    return f"{backend}/{precision}"


def build(spec: DemoSpec, out_dir: Path, key_path: Path, work_dir: Path, card_dir: Path | None = None,
          command: str = "", log: Callable[[str], None] = print) -> dict:
    """Build, sign and verify the spec's package; return the build report (also written as JSON)."""
    work_dir, out_dir = Path(work_dir), Path(out_dir)
    data_dir, model_dir = work_dir / "data", work_dir / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    revision = code_revision()  # of the code that starts the build, before anything can change
    generate(spec, data_dir)
    data_manifest = dataset_manifest(data_dir)
    (work_dir / "dataset-manifest.txt").write_bytes(data_manifest)
    splits = load_splits(spec, data_dir)
    log(f"[{spec.id}] data: " + ", ".join(f"{k} {len(v)} series / {sum(len(s.sop_uids) for s in v)} images" for k, v in splits.items())
        + f" ({time.perf_counter() - t0:.0f} s)")
    t_train = time.perf_counter()
    model, history = train(splits["train"], splits["val"], spec.train, spec.aggregation.apply,
                           log=lambda r: log(f"[{spec.id}] " + json.dumps(r)))
    train_seconds = time.perf_counter() - t_train
    save_checkpoint(model_dir / "model.pt", model, {"id": spec.id, "input_size": spec.input.size, "history": history})
    y = {k: np.array([s.label for s in v]) for k, v in splits.items()}

    onnx_fp32 = export.export_onnx(model, model_dir / "fp32.onnx", spec.input.channels, spec.input.size)
    calibration_set = Images(splits["calibration"])
    parity = export.parity(model, onnx_fp32, calibration_set.take(np.arange(min(64, len(calibration_set)))))
    fp32 = onnxruntime_runner(onnx_fp32)
    a, b = platt_fit(y["calibration"], series_scores(fp32, splits["calibration"], spec.aggregation.apply))
    calibration = Calibration(method="platt", a=a, b=b)

    def calibrated(runner, split: str) -> np.ndarray:
        """Calibrated series scores of one split, as the box computes them."""
        return np.array([calibration.apply(v) for v in series_scores(runner, splits[split], spec.aggregation.apply)])

    cal_scores = calibrated(fp32, "calibration")
    threshold = threshold_for_sensitivity(y["calibration"], cal_scores, TARGET_SENSITIVITY)
    cal_sens, cal_spec = sensitivity_specificity(y["calibration"], cal_scores, threshold)

    train_images = Images(splits["train"])
    calib_images = train_images.take(quantize.calibration_indices(train_images.labels, spec.calibration_images,
                                                                  spec.train.seed))
    del train_images
    int8 = quantize.onnx_int8(onnx_fp32, model_dir / "int8.onnx", calib_images)
    ov32 = quantize.openvino_fp32(onnx_fp32, model_dir / "openvino-fp32.xml")
    ov8 = quantize.openvino_int8(onnx_fp32, model_dir / "openvino-int8.xml", calib_images)
    built = {
        ("onnxruntime", "fp32"): ([onnx_fp32], fp32),
        ("onnxruntime", "int8"): ([int8], onnxruntime_runner(int8)),
        ("openvino", "fp32"): ([ov32, ov32.with_suffix(".bin")], openvino_runner(ov32)),
        ("openvino", "int8"): ([ov8, ov8.with_suffix(".bin")], openvino_runner(ov8)),
    }
    saturation_bound = quantize.u8s8_pair_bound(int8)

    eval_splits = ("calibration", "gate", "test", "external")
    scores = {(bk, split): calibrated(runner, split) for bk, (_, runner) in built.items() for split in eval_splits}
    ref_gate_flags = scores[(("onnxruntime", "fp32"), "gate")] >= threshold
    kept, excluded, report_variants = {}, [], []
    metrics: dict[str, dict[str, dict]] = {split: {} for split in eval_splits}
    for (backend, precision), (paths, runner) in built.items():
        key = _variant_key(backend, precision)
        gate_scores = scores[((backend, precision), "gate")]
        gate = variant_agreement(ref_gate_flags, gate_scores >= threshold, y["gate"])
        reasons = []
        if gate["agreement"] < GATE_MIN_AGREEMENT:
            reasons.append(f"flags agree with FP32 on {gate['agreement']:.4f} of the gate split (minimum {GATE_MIN_AGREEMENT})")
        if gate["lost_positives"]:
            reasons.append(f"unflags {gate['lost_positives']} positive(s) FP32 flags on the gate split")
        if (backend, precision) == ("onnxruntime", "int8") and saturation_bound > quantize.INT16_MAX:
            reasons.append(f"U8S8 pair sum can reach {saturation_bound} > {quantize.INT16_MAX}: saturates without VNNI")
        ok = (backend, precision) == ("onnxruntime", "fp32") or not reasons
        status = "kept" if ok else "left out: " + "; ".join(reasons)
        gate_metrics = operating_metrics(y["gate"], gate_scores, threshold, seed=spec.train.seed)
        test_auc = roc_auc(y["test"], scores[((backend, precision), "test")])
        report_variants.append({"backend": backend, "precision": precision, "gate": gate, "gate_metrics": gate_metrics,
                                "test_auc": test_auc, "status": status})
        log(f"[{spec.id}] {key}: gate agreement {gate['agreement']:.4f}, lost positives {gate['lost_positives']} ({status})")
        if ok:
            kept[(backend, precision)] = (paths, runner, test_auc)
            for split in eval_splits:
                metrics[split][key] = operating_metrics(y[split], scores[((backend, precision), split)], threshold,
                                                        seed=spec.train.seed)
        else:
            excluded.append({"backend": backend, "precision": precision, "reason": status})

    test_fp32 = scores[(("onnxruntime", "fp32"), "test")]
    golden_bytes, tolerances, golden_report = golden(splits["test"], fp32, calibration, threshold,
                                                     {_variant_key(b, p): (p, r) for (b, p), (_, r, _) in kept.items()},
                                                     per_class=RADIOGRAPH_GOLDEN_PER_CLASS if spec.input.kind == "radiograph"
                                                     else GOLDEN_PER_CLASS)
    for (backend, precision) in list(kept):
        overlap = golden_report["measured"][_variant_key(backend, precision)]["cam_top_overlap"]
        if overlap < CAM_OVERLAP_FLOOR:
            reason = (f"left out: heat map points elsewhere than FP32 on the golden cases (top-region overlap "
                      f"{overlap:.2f} < {CAM_OVERLAP_FLOOR})")
            del kept[(backend, precision)]
            for split in metrics.values():
                split.pop(_variant_key(backend, precision), None)
            excluded.append({"backend": backend, "precision": precision, "reason": reason})
            next(v for v in report_variants if (v["backend"], v["precision"]) == (backend, precision))["status"] = reason
            log(f"[{spec.id}] {backend}/{precision}: {reason}")
    golden_variants = {_variant_key(b, p): (p, r) for (b, p), (_, r, _) in kept.items()}
    golden_files, golden_cases, series_atol, series_report = golden_dicom(
        splits["test"], golden_report["chosen"], data_dir, spec.input, spec.aggregation, calibration, threshold,
        golden_variants)
    golden_report["dicom"] = series_report
    drift = {"feature_set": spec.input.kind, "histograms": merge([s.drift for s in splits["train"]]),
             "thresholds": reference_thresholds([s.drift for s in splits["train"]], seed=spec.train.seed)}
    cam_size = spec.input.size // model.stride
    lineage = {"parent_version": spec.parent_version,
               "dataset_manifest_sha256": hashlib.sha256(data_manifest).hexdigest(), "code_revision": revision}
    operating_point = {"threshold": threshold, "target_sensitivity": TARGET_SENSITIVITY,
                       "validation_sensitivity": cal_sens, "validation_specificity": cal_spec,
                       "chosen_on": "calibration split"}
    info = {
        "id": spec.id, "version": spec.version, "seed": spec.train.seed, "parameters": sum(p.numel() for p in model.parameters()),
        "input_desc": _input_desc(spec), "cam_size": cam_size, "aggregation": spec.aggregation.model_dump(exclude_none=True),
        "aggregation_desc": _aggregation_desc(spec), "operating_point": operating_point,
        "calibration": {"a": a, "b": b, "n": len(y["calibration"]), "positives": int(y["calibration"].sum())},
        "data_desc": spec.data_desc, "intended_use": spec.intended_use, "limits": spec.limits,
        "split_counts": ", ".join(f"{k} {len(v)} ({int(y[k].sum())} positive)" for k, v in splits.items()),
        "external_scanner": spec.external_scanner,
        "objective": _objective_desc(spec, supervised_maps=all(s.masks is not None for s in splits["train"])),
        "epochs_run": len(history), "best_epoch": int(min(history, key=lambda r: r["val_loss"])["epoch"]),
        "keep_last": spec.train.keep_last,
        "train_seconds": train_seconds, "machine": machine(), "cpu_flags": cpu_flags(), "command": command,
        "lineage": lineage, "metrics": metrics,
        "subgroups": subgroup_metrics(splits["test"], test_fp32, threshold),
        "external_subgroups": subgroup_metrics(splits["external"], scores[(("onnxruntime", "fp32"), "external")], threshold),
        "gate_min_agreement": GATE_MIN_AGREEMENT, "variants": report_variants,
        "int8_note": INT8_NOTE.format(bound=saturation_bound),
        "golden_cpus": f"{machine()}; CPU flags {cpu_flags()}", "golden": golden_report,
        "parity": parity, "history": history,
    }
    info["input_constraints"] = input_constraints(spec.generator) if spec.constrain_inputs else None
    files = {"golden/golden.npz": golden_bytes, "drift/reference.json": json.dumps(drift, sort_keys=True).encode(),
             **golden_files}
    variants = []
    for (backend, precision), (paths, _, auc) in kept.items():
        names = [f"model/{p.name}" for p in paths]
        files.update({n: p.read_bytes() for n, p in zip(names, paths)})
        variants.append({"backend": backend, "precision": precision, "files": names, "test_auc": auc,
                         "tolerance": {**tolerances[_variant_key(backend, precision)],
                                       "series_atol": series_atol[_variant_key(backend, precision)]},
                         "options": OPENVINO_OPTIONS if backend == "openvino" else {}})
    manifest = {
        "format_version": 1, "id": spec.id, "version": spec.version, "task": "binary-triage", "finding": spec.finding,
        "labels": list(spec.labels),
        "input": spec.input.model_dump(),
        "outputs": {"score": "score", "cam": "cam", "cam_size": cam_size},
        "aggregation": spec.aggregation.model_dump(exclude_none=True),
        "calibration": calibration.model_dump(),
        "operating_point": operating_point, "variants": variants, "excluded_variants": excluded,
        "golden": "golden/golden.npz", "drift_reference": "drift/reference.json", "model_card": "MODEL_CARD.md",
        **({"input_constraints": info["input_constraints"]} if spec.constrain_inputs else {}),
        "golden_series": golden_cases, "lineage": lineage, "metrics": _finite(metrics),
        "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "provenance": {"seed": spec.train.seed, "generator": asdict(spec.generator), "train": config_dict(spec.train),
                       "onnx_opset": export.OPSET, "torch": torch.__version__, "parity_max_abs_diff": parity,
                       "train_seconds": round(train_seconds, 1), "machine": info["machine"], "cpu_flags": info["cpu_flags"],
                       "command": command, "golden": golden_report},
    }
    package_path = out_dir / f"{spec.id}-{spec.version}.tar"
    public_key = Path(key_path).with_suffix(".pub")

    def sign() -> None:
        """Write the card and sign the package with it; verify as the box would."""
        info["build_seconds"] = time.perf_counter() - t0
        card = model_card(info)
        if card_dir is not None:
            Path(card_dir).mkdir(parents=True, exist_ok=True)
            (Path(card_dir) / f"{spec.id}.md").write_text(card)
        write_package(package_path, manifest, {**files, "MODEL_CARD.md": card.encode()}, load_private_key(key_path))
        verify_package(package_path, [public_key])

    sign()
    if spec.mixed_stream_series and isinstance(spec.generator, CTConfig):
        t_stream = time.perf_counter()
        info["mixed_stream"] = mixed_stream_flag_rate(package_path, public_key, spec.generator, spec.mixed_stream_series,
                                                      seed=spec.train.seed + 1, work_dir=work_dir)
        log(f"[{spec.id}] mixed stream: {json.dumps(info['mixed_stream'], default=float)} "
            f"({time.perf_counter() - t_stream:.0f} s)")
        sign()  # the card now carries the stream's figure
    info["package"] = str(package_path)
    info["total_seconds"] = time.perf_counter() - t0
    (work_dir / "report.json").write_text(json.dumps(info, indent=2, default=float))
    log(f"[{spec.id}] package {package_path} verified; test AUC {roc_auc(y['test'], test_fp32):.4f}; "
        f"total {info['total_seconds']:.0f} s")
    return info


def _input_desc(spec: DemoSpec) -> str:
    if spec.input.kind == "ct_slice":
        wins = ", ".join(f"{w.name} {w.center:g}/{w.width:g}" + (f" with everything above {w.zero_above:g} HU at 0"
                                                                   if w.zero_above is not None else "")
                         for w in spec.input.windows)
        slab = (f", averaged with its neighbours over a {spec.input.slab_mm:g} mm slab (thinner slices read as one "
                f"{spec.input.slab_mm:g} mm slice)" if spec.input.slab_mm else "")
        k = spec.input.context_slices
        context = (f"; with the {k} {'slab' if spec.input.slab_mm else 'slice'}{'s' if k > 1 else ''} above and below "
                   f"as context ({spec.input.channels} channels)" if k else "")
        return (f"one axial slice, {len(spec.input.windows)} HU windows (centre/width: {wins}), "
                f"{spec.input.size}x{spec.input.size}{slab}{context}")
    return f"one radiograph normalised to [0, 1] (0.5-99.5 percentiles, MONOCHROME1 inverted), {spec.input.size}x{spec.input.size}"


def _objective_desc(spec: DemoSpec, supervised_maps: bool) -> str:
    cfg = spec.train
    hard = (f", {cfg.hard_negative_share:.0%} of them drawn by how positive the model last scored them"
            if cfg.hard_negative_share else "")
    text = (f"Logistic loss on the image score, each epoch over every positive image and "
            f"{cfg.negatives_per_positive:g} negatives per positive{hard}")
    if supervised_maps and cfg.map_weight:
        text += (f"; plus (weight {cfg.map_weight:g}) a cell-wise loss on the activation map against the "
                 "generator's lesion maps: cells away from the lesion are negatives, cells it fills positives")
    return text + "."


def _aggregation_desc(spec: DemoSpec) -> str:
    images = "slice scores" if spec.input.kind == "ct_slice" else "scores of the series' images (one per study here)"
    agg = spec.aggregation
    return f"maximum of the {images}" if agg.method == "max" else f"mean of the top {agg.k} {images}"
