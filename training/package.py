"""Build and sign model packages (format: :mod:`appliance.models.package`).

Keys are ed25519: the private key as unencrypted PKCS#8 PEM (mode 0600), the public key
as SubjectPublicKeyInfo PEM. The tar is written deterministically (sorted members,
zero mtimes and owners) with ``manifest.json`` and ``manifest.json.sig`` first.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.models.manifest import Manifest, public_key_b64
from appliance.models.package import MANIFEST_NAME, SIGNATURE_NAME
from training.backends import Runner, run_batched
from training.data.folder import Series
from training.indication import Indication

#: Tolerance floors of the golden score check per precision.
SCORE_FLOOR = {"fp32": 1e-4, "int8": 0.01}
#: Measured golden differences (spread across backends on this machine) are multiplied by
#: this margin for other CPUs.
TOLERANCE_MARGIN = 2.0
#: The heat-map check passes when the top-region overlap is at least the measured one
#: minus this margin. A variant whose measured overlap is below :data:`CAM_OVERLAP_FLOOR`
#: points its heat map elsewhere than FP32 and is left out of the package.
CAM_OVERLAP_MARGIN = 0.2
CAM_OVERLAP_FLOOR = 0.5
#: Golden cases per class (the series farthest from the threshold on each side).
GOLDEN_PER_CLASS = 2


def generate_keypair(private_path: Path) -> tuple[Path, Path]:
    """Write a new ed25519 private key at ``private_path`` and its public key beside it (``.pub``)."""
    private_path = Path(private_path)
    private_path.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public_path = private_path.with_suffix(".pub")
    public_path.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return private_path, public_path


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read an ed25519 private key written by :func:`generate_keypair`."""
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an ed25519 private key")
    return key


def golden_series(classes, series_scores: np.ndarray, threshold: float, per_class: int = GOLDEN_PER_CLASS) -> list[int]:
    """Indices of the golden cases: the ``per_class`` in-indication series FP32 flags and
    the ``per_class`` negatives it leaves, each by the widest margin from the threshold, so
    a backend that moves the verdict fails (pure; sub-indication series are never chosen)."""
    c, s = np.asarray(classes).astype(str), np.asarray(series_scores, dtype=np.float64)
    chosen: list[int] = []
    for cls, margin in ((Indication.IN, s - threshold), (Indication.NEGATIVE, threshold - s)):
        right = [int(i) for i in np.argsort(-margin, kind="stable") if c[i] == cls and margin[i] > 0]
        chosen += right[:per_class]
    return sorted(chosen)


def golden(series: list[Series], series_scores: np.ndarray, reference: Runner, threshold: float,
           variants: dict[str, tuple[str, Runner]]) -> tuple[bytes, dict[str, dict], dict]:
    """Golden file (npz: ``input``, ``score``, ``cam`` from ``reference``), tolerances, report.

    ``series`` are the golden series (:func:`golden_series`), loaded, and
    ``series_scores`` their calibrated FP32 series scores; the inputs are each one's key
    image (highest FP32 score). Each variant's score tolerance is its measured max difference
    from FP32 times :data:`TOLERANCE_MARGIN`, at least the precision's floor; its heat-map
    check is top-region overlap (``appliance.models.qualify.cam_top_overlap``) at least
    the measured overlap minus :data:`CAM_OVERLAP_MARGIN`. The report holds what was
    measured, for the card and the manifest's provenance.
    """
    from appliance.models.qualify import cam_top_overlap

    keys = [int(np.argmax(run_batched(reference, s.model_inputs())[0])) for s in series]
    inputs = np.stack([s.model_inputs()[k] for s, k in zip(series, keys)]).astype(np.float32)
    score, cam = reference(inputs)
    buf = io.BytesIO()
    np.savez(buf, input=inputs, score=score.astype(np.float32), cam=cam.astype(np.float32))
    tolerances, measured = {}, {}
    for key, (precision, runner) in variants.items():
        s, c = runner(inputs)
        score_diff = float(np.max(np.abs(s - score)))
        overlap = cam_top_overlap(cam, c)
        tolerances[key] = {
            "score_atol": max(SCORE_FLOOR[precision], TOLERANCE_MARGIN * score_diff),
            "cam_atol": max(1e-3, TOLERANCE_MARGIN * float(np.max(np.abs(c - cam)))),
            "cam_min_overlap": max(0.0, overlap - CAM_OVERLAP_MARGIN),
        }
        measured[key] = {"score_diff": score_diff, "cam_top_overlap": overlap}
    report = {"series": [s.series_uid for s in series], "labels": [s.label for s in series],
              "series_scores": [float(v) for v in series_scores], "threshold": threshold, "measured": measured,
              "margin": TOLERANCE_MARGIN, "cam_overlap_margin": CAM_OVERLAP_MARGIN}
    return buf.getvalue(), tolerances, report


#: Slices of a CT golden series kept in the package: the key slice and one either side.
GOLDEN_SLICES_EACH_SIDE = 1


def golden_dicom(series: list[Series], series_paths: list[list[Path]], spec_input, aggregation, calibration,
                 threshold: float, variants: dict[str, tuple[str, Runner]]) -> tuple[dict[str, bytes], list[dict], dict[str, float], dict]:
    """Golden DICOM cases for the box's end-to-end check (``manifest.golden_series``).

    For each golden series (loaded, :func:`golden_series`): its key slice (highest FP32 score) and
    :data:`GOLDEN_SLICES_EACH_SIDE` neighbours either side, copied from the dataset
    byte for byte (``series_paths``: each series' files). They are decoded and preprocessed exactly as the box does
    (``decode_in_order``, ``model_input``, ``stack_inputs``), scored by every variant, aggregated and
    calibrated. The expected verdict is FP32 ONNX Runtime's (the first entry of
    ``variants``); each variant's ``series_atol`` is its measured largest difference times
    :data:`TOLERANCE_MARGIN`, at least the precision's floor.

    Returns
    -------
    files : dict
        Archive path -> DICOM bytes.
    cases : list of dict
        ``golden_series`` entries (name, files, label, score, flag).
    series_atol : dict
        Variant key -> tolerance.
    report : dict
        What was measured.
    """
    from appliance.triage.decode import read_header
    from appliance.triage.pipeline import decode_in_order, model_input, stack_inputs

    reference_key = next(iter(variants))
    files, cases, diffs = {}, [], {key: 0.0 for key in variants}
    for n, (s, candidates) in enumerate(zip(series, series_paths)):
        key_index = int(np.argmax(variants[reference_key][1](s.model_inputs())[0]))
        keep = set(s.sop_uids[max(0, key_index - GOLDEN_SLICES_EACH_SIDE):key_index + GOLDEN_SLICES_EACH_SIDE + 1])
        paths = sorted(p for p in candidates if str(read_header(p).SOPInstanceUID) in keep)
        name = f"case{n + 1}-{'positive' if s.label else 'negative'}"
        names = [f"golden/series/{name}/{k + 1:02d}.dcm" for k in range(len(paths))]
        files.update({a: p.read_bytes() for a, p in zip(names, paths)})
        decoded = [x for _, _, x in decode_in_order(paths, lambda image: (model_input(spec_input, image), image))]
        inputs = stack_inputs(spec_input, [x for x, _ in decoded], [image.position for _, image in decoded],
                              decoded[0][1].dataset)
        scores = {key: calibration.apply(min(max(aggregation.apply(runner(inputs)[0]), 0.0), 1.0))
                  for key, (_, runner) in variants.items()}
        for key in variants:
            diffs[key] = max(diffs[key], abs(scores[key] - scores[reference_key]))
        cases.append({"name": name, "files": names, "label": s.label, "score": scores[reference_key],
                      "flag": bool(scores[reference_key] >= threshold)})
    tolerances = {key: max(SCORE_FLOOR[precision], TOLERANCE_MARGIN * diffs[key]) for key, (precision, _) in variants.items()}
    return files, cases, tolerances, {"series_score_diff": diffs, "margin": TOLERANCE_MARGIN}


def write_package(out: Path, manifest: dict, files: dict[str, bytes], key: Ed25519PrivateKey) -> Manifest:
    """Complete ``manifest`` (files with sha256, signing key), validate, sign and write the tar.

    Parameters
    ----------
    out : Path
        The package file to write.
    manifest : dict
        Manifest fields except ``files`` and ``signing_public_key``.
    files : dict
        Archive path -> content, for every file but the manifest and its signature.
    key : Ed25519PrivateKey
        The signing key.
    """
    full = dict(manifest)
    full["files"] = [{"path": p, "size": len(b), "sha256": hashlib.sha256(b).hexdigest()} for p, b in sorted(files.items())]
    full["signing_public_key"] = public_key_b64(key.public_key())
    validated = Manifest.model_validate(full)
    manifest_bytes = json.dumps(full, indent=2, sort_keys=True).encode()
    _write_tar(out, {MANIFEST_NAME: manifest_bytes, SIGNATURE_NAME: key.sign(manifest_bytes), **dict(sorted(files.items()))})
    return validated


def resign_package(src: Path, out: Path, key: Ed25519PrivateKey, version: str | None = None) -> Manifest:
    """Re-sign an existing package with ``key`` (its manifest names the new key); with
    ``version``, the same model stated as that version."""
    with tarfile.open(src, "r:*") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar if m.isreg()}
    manifest = json.loads(members.pop(MANIFEST_NAME))
    members.pop(SIGNATURE_NAME, None)
    manifest.pop("files", None)
    manifest.pop("signing_public_key", None)
    if version is not None:
        manifest["version"] = version
    return write_package(out, manifest, members, key)


def _write_tar(out: Path, members: dict[str, bytes]) -> None:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    os.replace(tmp, out)
