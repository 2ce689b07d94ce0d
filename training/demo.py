"""The two demo triage models and the pipeline that turns a dataset into a signed package.

:func:`build` runs: generate (synthetic, seeded) -> load with the appliance's
preprocessing -> split by patient -> train -> operating point on validation -> ONNX export
and parity -> INT8 / OpenVINO variants, each evaluated and gated against FP32 -> golden
outputs -> drift reference -> model card -> signed package -> verification.
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from appliance.drift.histograms import merge
from appliance.models.package import Aggregation, InputSpec, Window, verify_package
from appliance.triage.preprocess import HEAD_CT_WINDOWS
from training import export, quantize
from training.constraints import input_constraints
from training.backends import OPENVINO_OPTIONS, onnxruntime_runner, openvino_runner
from training.data.cr_synth import CR_IMAGE_STORAGE, CRConfig, generate_cr_dataset
from training.data.ct_synth import CT_IMAGE_STORAGE, CTConfig, generate_ct_dataset
from training.data.folder import Series, load_folder, split_by_patient
from training.drift import reference_thresholds
from training.evaluate import metrics, model_card, roc_auc, sensitivity_specificity, series_scores, subgroup_metrics, threshold_for_sensitivity
from training.package import golden, load_private_key, write_package
from training.train import TrainConfig, config_dict, save_checkpoint, train

DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
INT8_MAX_AUC_DROP = 0.005
TARGET_SENSITIVITY = 0.95


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
    fractions: tuple[float, float, float]
    intended_use: str
    data_desc: str
    limits: str
    calibration_images: int = 128
    #: Write the training data's ranges as the manifest's ``input_constraints``. Quick
    #: builds (test fixtures fed with series of other sizes) leave them out.
    constrain_inputs: bool = True


def head_ct(quick: bool = False, seed: int = 20261127) -> DemoSpec:
    """Head-CT intracranial haemorrhage triage (slice model, series score = max)."""
    gen = CTConfig(n_patients=400, seed=seed) if not quick else CTConfig(
        n_patients=18, seed=seed, matrix=64, thicknesses_mm=(12.0,), coverage_mm=(100.0, 110.0))
    return DemoSpec(
        id="head-ct-ich-demo", version="1.0.0",
        finding="intracranial haemorrhage (intraparenchymal or subdural)",
        labels=("no-haemorrhage", "haemorrhage"),
        input=InputSpec(kind="ct_slice", modalities=["CT"], body_part="HEAD", sop_class_uids=[CT_IMAGE_STORAGE],
                        channels=len(HEAD_CT_WINDOWS), size=128 if not quick else 32,
                        windows=[Window(name=n, center=c, width=w) for n, c, w in HEAD_CT_WINDOWS]),
        aggregation=Aggregation(method="max"), generator=gen,
        train=(TrainConfig(seed=seed, epochs=40, patience=8, min_epochs=20, negatives_per_positive=1.5)
               if not quick else TrainConfig(seed=seed, epochs=2, widths=(8, 8, 8, 8))),
        fractions=(0.6, 0.15, 0.25),
        intended_use=("Worklist prioritisation of non-contrast axial head CT in adults: flags series that may "
                      "show intracranial haemorrhage so a radiologist reads them sooner. Never rules a study out; "
                      "every study is still read."),
        data_desc=(f"{gen.n_patients} synthetic patients from `training.data.ct_synth` (seed {gen.seed}), one axial "
                   "series each, three fictional scanner styles, 3-5 mm slices, 200-250 mm FOV; half with an "
                   "intraparenchymal blob (6-35 mm) or subdural crescent (3-14 mm), 50-90 HU, a quarter low contrast "
                   "(50-58 HU). Size buckets by rendered volume: small < 1 mL, medium 1-5 mL, large >= 5 mL."),
        limits="Trained on slices resized to a fixed matrix; very thin (< 1 mm) or very thick (> 5 mm) slices are outside the training range.",
        constrain_inputs=not quick,
    )


def chest_cr(quick: bool = False, seed: int = 20261128) -> DemoSpec:
    """Chest radiograph pneumothorax triage (one image per study)."""
    gen = CRConfig(n_patients=3000, seed=seed) if not quick else CRConfig(n_patients=24, seed=seed, matrix=64)
    return DemoSpec(
        id="chest-cr-pneumothorax-demo", version="1.0.0", finding="pneumothorax",
        labels=("no-pneumothorax", "pneumothorax"),
        input=InputSpec(kind="radiograph", modalities=["CR", "DX"], body_part="CHEST",
                        sop_class_uids=[CR_IMAGE_STORAGE, DX_FOR_PRESENTATION], channels=1, size=192 if not quick else 32),
        aggregation=Aggregation(method="max"), generator=gen,
        train=(TrainConfig(seed=seed, epochs=15, patience=4, min_epochs=8, negatives_per_positive=1.0)
               if not quick else TrainConfig(seed=seed, epochs=2, widths=(8, 8, 8, 8), negatives_per_positive=1.0)),
        fractions=(0.6, 0.15, 0.25),
        intended_use=("Worklist prioritisation of adult PA chest radiographs: flags images that may show a "
                      "pneumothorax for earlier reading. Never rules a study out."),
        data_desc=(f"{gen.n_patients} synthetic PA chest radiographs from `training.data.cr_synth` (seed {gen.seed}), "
                   "three fictional CR readers (10/12-bit, one MONOCHROME1); half with a pneumothorax-like collapse of "
                   "one lung (air rim 8-50 mm without lung markings, pleural line), a quarter subtle. Size buckets by "
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
    """Load a labelled folder with the spec's preprocessing and split it by patient."""
    return split_by_patient(load_folder(data_dir, spec.input), spec.train.seed, spec.fractions)


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


def build(spec: DemoSpec, out_dir: Path, key_path: Path, work_dir: Path, card_dir: Path | None = None,
          command: str = "", log: Callable[[str], None] = print) -> dict:
    """Build, sign and verify the spec's package; return the build report (also written as JSON)."""
    work_dir, out_dir = Path(work_dir), Path(out_dir)
    data_dir, model_dir = work_dir / "data", work_dir / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    generate(spec, data_dir)
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
    sample = np.concatenate([s.inputs for s in splits["test"]])[:64]
    parity = export.parity(model, onnx_fp32, sample)
    fp32 = onnxruntime_runner(onnx_fp32)
    val_scores = series_scores(fp32, splits["val"], spec.aggregation.apply)
    threshold = threshold_for_sensitivity(y["val"], val_scores, TARGET_SENSITIVITY)
    val_sens, val_spec = sensitivity_specificity(y["val"], val_scores, threshold)
    test_scores = series_scores(fp32, splits["test"], spec.aggregation.apply)
    fp32_auc = roc_auc(y["test"], test_scores)

    train_images = np.concatenate([s.inputs for s in splits["train"]])
    train_labels = np.concatenate([s.image_labels for s in splits["train"]])
    calib = quantize.calibration_images(train_images, train_labels, spec.calibration_images, spec.train.seed)
    built = {
        ("onnxruntime", "fp32"): ([onnx_fp32], fp32),
    }
    int8 = quantize.onnx_int8(onnx_fp32, model_dir / "int8.onnx", calib)
    built[("onnxruntime", "int8")] = ([int8], onnxruntime_runner(int8))
    ov32 = quantize.openvino_fp32(onnx_fp32, model_dir / "openvino-fp32.xml")
    built[("openvino", "fp32")] = ([ov32, ov32.with_suffix(".bin")], openvino_runner(ov32))
    ov8 = quantize.openvino_int8(onnx_fp32, model_dir / "openvino-int8.xml", calib)
    built[("openvino", "int8")] = ([ov8, ov8.with_suffix(".bin")], openvino_runner(ov8))

    kept, excluded, report_variants = {}, [], []
    for (backend, precision), (paths, runner) in built.items():
        auc = fp32_auc if (backend, precision) == ("onnxruntime", "fp32") else roc_auc(
            y["test"], series_scores(runner, splits["test"], spec.aggregation.apply))
        drop = fp32_auc - auc
        ok = precision == "fp32" or (np.isfinite(auc) and np.isfinite(fp32_auc) and drop <= INT8_MAX_AUC_DROP)
        status = "kept" if ok else f"left out: test AUC {auc:.4f} is {drop:.4f} below FP32 (limit {INT8_MAX_AUC_DROP})"
        report_variants.append({"backend": backend, "precision": precision, "test_auc": auc, "auc_vs_fp32": 0.0 - drop,
                                "status": status})
        log(f"[{spec.id}] {backend} {precision}: test AUC {auc:.4f} ({status})")
        if ok:
            kept[(backend, precision)] = (paths, runner, auc)
        else:
            excluded.append({"backend": backend, "precision": precision, "reason": status})

    test_images = np.concatenate([s.inputs for s in splits["test"]])
    test_image_labels = np.concatenate([s.image_labels for s in splits["test"]])
    gold_idx = np.concatenate([np.flatnonzero(test_image_labels == 1)[:4], np.flatnonzero(test_image_labels == 0)[:4]])
    golden_bytes, tolerances = golden(test_images[np.sort(gold_idx)], fp32,
                                      {f"{b}/{p}": (p, r) for (b, p), (_, r, _) in kept.items()})
    drift = {"feature_set": spec.input.kind, "histograms": merge([s.drift for s in splits["train"]]),
             "thresholds": reference_thresholds([s.drift for s in splits["train"]], seed=spec.train.seed)}
    cam_size = spec.input.size // 8
    info = {
        "id": spec.id, "version": spec.version, "seed": spec.train.seed, "parameters": sum(p.numel() for p in model.parameters()),
        "input_desc": _input_desc(spec), "cam_size": cam_size, "aggregation": spec.aggregation.model_dump(exclude_none=True),
        "aggregation_desc": _aggregation_desc(spec),
        "operating_point": {"threshold": threshold, "target_sensitivity": TARGET_SENSITIVITY,
                            "validation_sensitivity": val_sens, "validation_specificity": val_spec},
        "data_desc": spec.data_desc, "intended_use": spec.intended_use, "limits": spec.limits,
        "split_counts": ", ".join(f"{k} {len(v)} ({int(y[k].sum())} positive)" for k, v in splits.items()),
        "epochs_run": len(history), "best_epoch": int(min(history, key=lambda r: r["val_loss"])["epoch"]),
        "train_seconds": train_seconds, "machine": machine(), "command": command,
        "test": metrics(y["test"], test_scores, threshold, seed=spec.train.seed),
        "subgroups": subgroup_metrics(splits["test"], test_scores, threshold),
        "variants": report_variants, "parity": parity, "history": history,
    }
    card = model_card(info)
    if card_dir is not None:
        Path(card_dir).mkdir(parents=True, exist_ok=True)
        (Path(card_dir) / f"{spec.id}.md").write_text(card)
    files = {"golden/golden.npz": golden_bytes, "drift/reference.json": json.dumps(drift, sort_keys=True).encode(),
             "MODEL_CARD.md": card.encode()}
    variants = []
    for (backend, precision), (paths, _, auc) in kept.items():
        names = [f"model/{p.name}" for p in paths]
        files.update({n: p.read_bytes() for n, p in zip(names, paths)})
        variants.append({"backend": backend, "precision": precision, "files": names, "test_auc": auc,
                         "tolerance": tolerances[f"{backend}/{precision}"],
                         "options": OPENVINO_OPTIONS if backend == "openvino" else {}})
    manifest = {
        "format_version": 1, "id": spec.id, "version": spec.version, "task": "binary-triage", "finding": spec.finding,
        "labels": list(spec.labels),
        "input": spec.input.model_dump(),
        "outputs": {"score": "score", "cam": "cam", "cam_size": cam_size},
        "aggregation": spec.aggregation.model_dump(exclude_none=True),
        "operating_point": info["operating_point"], "variants": variants, "excluded_variants": excluded,
        "golden": "golden/golden.npz", "drift_reference": "drift/reference.json", "model_card": "MODEL_CARD.md",
        **({"input_constraints": input_constraints(spec.generator)} if spec.constrain_inputs else {}),
        "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "provenance": {"seed": spec.train.seed, "generator": asdict(spec.generator), "train": config_dict(spec.train),
                       "onnx_opset": export.OPSET, "torch": torch.__version__, "parity_max_abs_diff": parity,
                       "train_seconds": round(train_seconds, 1), "machine": info["machine"], "command": command},
    }
    package_path = out_dir / f"{spec.id}-{spec.version}.tar"
    write_package(package_path, manifest, files, load_private_key(key_path))
    verify_package(package_path, [Path(key_path).with_suffix(".pub")])
    info["package"] = str(package_path)
    info["total_seconds"] = time.perf_counter() - t0
    (work_dir / "report.json").write_text(json.dumps(info, indent=2, default=float))
    log(f"[{spec.id}] package {package_path} verified; test AUC {fp32_auc:.4f}; total {info['total_seconds']:.0f} s")
    return info


def _input_desc(spec: DemoSpec) -> str:
    if spec.input.kind == "ct_slice":
        wins = ", ".join(f"{n} {c:g}/{w:g}" for n, c, w in spec.input.window_tuples())
        return f"one axial slice, {spec.input.channels} HU windows (centre/width: {wins}), {spec.input.size}x{spec.input.size}"
    return f"one radiograph normalised to [0, 1] (0.5-99.5 percentiles, MONOCHROME1 inverted), {spec.input.size}x{spec.input.size}"


def _aggregation_desc(spec: DemoSpec) -> str:
    images = "slice scores" if spec.input.kind == "ct_slice" else "scores of the series' images (one per study here)"
    agg = spec.aggregation
    return f"maximum of the {images}" if agg.method == "max" else f"mean of the top {agg.k} {images}"
