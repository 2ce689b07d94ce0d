"""The model card (Markdown), written from a build's evaluation, never by hand.

:func:`model_card` takes the ``info`` dict :func:`training.demo.build` assembles (the
same ``metrics`` the manifest carries) and formats it; every number in the card comes
from there. Proportions print as ``value (95% Wilson interval) k/n``; one over fewer
than ``training.evaluate.MIN_ESTIMABLE`` cases prints as *not estimable* with its counts.
"""

from __future__ import annotations

from training.evaluate import MIN_ESTIMABLE, PREVALENCES


def fmt_proportion(p: dict) -> str:
    """``0.953 (0.872-0.984) 41/43``, or ``not estimable (4 cases)`` (pure)."""
    if not p["estimable"]:
        return f"not estimable ({p['k']}/{p['n']}; < {MIN_ESTIMABLE} cases)"
    lo, hi = p["ci95"]
    return f"{p['value']:.3f} ({lo:.3f}-{hi:.3f}) {p['k']}/{p['n']}"


def fmt_interval(v: dict) -> str:
    """``0.153 (0.101-0.226)`` from ``{"value", "ci95"}`` (pure)."""
    lo, hi = v["ci95"]
    return f"{v['value']:.3f} ({lo:.3f}-{hi:.3f})"


def fmt_auc(m: dict) -> str:
    if m["auc"] is None:
        return "not estimable"
    lo, hi = m["auc_ci95"]
    return f"{m['auc']:.3f} ({lo:.3f}-{hi:.3f})"


def _row(name: str, m: dict) -> str:
    return (f"| {name} | {m['n']} | {m['positives']} | {fmt_proportion(m['sensitivity'])} | "
            f"{fmt_proportion(m['specificity'])} | {fmt_proportion(m['flag_rate'])} | {fmt_auc(m)} |")


_HEAD = ("| group | series | positives | sensitivity (95% CI) | specificity (95% CI) | flag rate | ROC AUC (95% CI) |\n"
         "|---|---|---|---|---|---|---|")


def metrics_table(metrics: dict[str, dict[str, dict]], splits: tuple[str, ...]) -> str:
    """One row per (split, variant) at the operating point (pure)."""
    rows = [_row(f"{split}: {variant}", m) for split in splits for variant, m in metrics.get(split, {}).items()]
    return "\n".join([_HEAD, *rows])


def prevalence_table(metrics: dict[str, dict[str, dict]], split: str) -> str:
    """Flag rate, PPV and NPV at each reported prevalence, per variant of ``split`` (pure)."""
    head = ["| variant | prevalence | flag rate (95% CI) | PPV (95% CI) | NPV (95% CI) |", "|---|---|---|---|---|"]
    rows = []
    for variant, m in metrics.get(split, {}).items():
        table = m["at_prevalence"]
        if table is None:
            rows.append(f"| {variant} | - | not estimable | not estimable | not estimable |")
            continue
        for prevalence, v in table.items():
            rows.append(f"| {variant} | {float(prevalence):.0%} | {fmt_interval(v['flag_rate'])} | "
                        f"{fmt_interval(v['ppv'])} | {fmt_interval(v['npv'])} |")
    return "\n".join(head + rows)


def subgroup_table(subgroups: dict[str, dict[str, dict]]) -> str:
    """One row per subgroup (pure)."""
    rows = [_row(f"{kind}: {name}", m) for kind, groups in subgroups.items() for name, m in groups.items()]
    return "\n".join([_HEAD, *rows])


def gate_table(variants: list[dict]) -> str:
    """The variant gate: flag agreement with FP32 on the gate split and the verdict (pure)."""
    head = ["| backend | precision | gate agreement | positives lost | gate sensitivity | gate specificity | status |",
            "|---|---|---|---|---|---|---|"]
    rows = [f"| {v['backend']} | {v['precision']} | {v['gate']['agreement']:.4f} ({v['gate']['n'] - v['gate']['lost'] - v['gate']['gained']}/{v['gate']['n']}) | "
            f"{v['gate']['lost_positives']} | {fmt_proportion(v['gate_metrics']['sensitivity'])} | "
            f"{fmt_proportion(v['gate_metrics']['specificity'])} | {v['status']} |" for v in variants]
    return "\n".join(head + rows)


def schedule_text(info: dict) -> str:
    """How many epochs ran and which weights were kept."""
    if info.get("keep_last"):
        return (f"{info['epochs_run']} epochs on a fixed cosine schedule, the last weights kept (the validation "
                f"loss, only watched, was lowest at epoch {info['best_epoch']})")
    return f"{info['epochs_run']} epochs (early stopping on validation loss, best epoch {info['best_epoch']})"


def constraints_text(constraints: dict | None) -> str:
    """The input constraints the package enforces, one bullet each (pure)."""
    if not constraints:
        return "- None: this build declares no input constraints; every routed series is scored."
    lines = []
    for key, value in constraints.items():
        if isinstance(value, dict):
            low, high = value.get("min"), value.get("max")
            span = f"{low:g}-{high:g}" if low is not None and high is not None else (
                f">= {low:g}" if low is not None else f"<= {high:g}")
            lines.append(f"- `{key}`: {span}")
        elif isinstance(value, str):
            lines.append(f"- `{key}`: {value}")
        elif value:
            lines.append(f"- `{key}`: {', '.join(' + '.join(v) if isinstance(v, list) else str(v) for v in value)}")
    return "\n".join(lines)


def mixed_stream_text(stream: dict | None) -> str:
    """The flag rate the appliance showed on a fresh mixed stream, against the card (pure;
    empty when the build ran none)."""
    if not stream:
        return ""
    if stream["card_interval"] is None:
        against = "; this card gives no interval to hold it against (test split too small)"
    else:
        lo, hi = stream["card_interval"]
        verdict = "inside" if stream["within"] else "**outside**"
        against = (f", {verdict} this card's\n95% interval for {stream['prevalence']:.0%} prevalence "
                   f"({lo:.3f}-{hi:.3f}, the table above)")
    groups = "\n".join(f"| {name} | {g['series']} | {g['positives']} | {g['flagged']} |"
                       for name, g in stream["by_acquisition"].items())
    return f"""### Flag rate on a mixed stream (the appliance, after signing)
The signed package was verified, golden-tested and its variant chosen as activation does
(`{stream['variant']}` ran), then a fresh stream it never saw (seed {stream['seed']}, every scanner
style including the external one, every slice thickness in equal shares, {stream['prevalence']:.0%}
positives drawn) went through the appliance's decode, preprocessing, inference, aggregation,
calibration and threshold (`training.mixed_stream`): {stream['series']} series, {stream['positives']} positive,
{stream['flagged']} flagged. Flag rate {fmt_proportion(stream['flag_rate'])}{against}. On the stream:
sensitivity {fmt_proportion(stream['sensitivity'])}, specificity {fmt_proportion(stream['specificity'])}.

| acquisition | series | positives | flagged |
|---|---|---|---|
{groups}

"""


def model_card(info: dict) -> str:
    """The model card (Markdown) from a build's ``info`` dict (see ``training.demo.build``)."""
    op, cal, lineage = info["operating_point"], info["calibration"], info["lineage"]
    prevalences = ", ".join(f"{p:.0%}" for p in PREVALENCES)
    return f"""# Model card: {info['id']} {info['version']}

**NOT FOR DIAGNOSTIC USE.** A demonstration model trained only on synthetic phantoms
generated by `training.data`; it has never seen a real patient image.

## Intended use
{info['intended_use']}

## Model
- Architecture: `TriageNet` (plain torch; {info['parameters']:,} parameters), input
  {info['input_desc']}; outputs `score` (sigmoid, shape N) and `cam`
  (class-activation map, logit units, {info['cam_size']}x{info['cam_size']}).
- Series score: {info['aggregation_desc']}, then calibrated: Platt scaling
  `sigmoid({cal['a']:.4f} * logit(score) + {cal['b']:.4f})`, fitted on the calibration split
  ({cal['n']} series, {cal['positives']} positive). The manifest carries it (`calibration`)
  and the appliance applies the same function before thresholding. The calibrated score
  is a probability at the calibration split's prevalence ({cal['positives'] / cal['n']:.0%}), not
  at a clinical one; the PPV/NPV below restate it at {prevalences}.
- Operating point: calibrated score >= {op['threshold']:.4f}, chosen on the calibration
  split (never the test split) as the highest threshold with sensitivity >=
  {op['target_sensitivity']:.2f} there (sensitivity {op['validation_sensitivity']:.3f},
  specificity {op['validation_specificity']:.3f} on that split).

## Data
{info['data_desc']}

Splits, disjoint by patient (seed {info['seed']}): {info['split_counts']}. Train fits the
weights; validation only {'is watched during training' if info.get('keep_last') else 'drives early stopping'}; calibration fits the calibration and the
threshold; gate decides which quantised variants ship; test is read once, for this card.
External: every series of the scanner style `{info['external_scanner']}`, never seen in training,
calibration or threshold choice.

## Input constraints the appliance enforces
A series outside these ranges (those of the training data) is not scored: the box sends a
"not analysed" notice instead.

{constraints_text(info.get('input_constraints'))}

## Training
{info['objective']}
Seed {info['seed']}, {schedule_text(info)}, {info['train_seconds']:.0f} s; whole build {info['build_seconds']:.0f} s on
{info['machine']} (CPU flags: {info['cpu_flags']}).
Rebuild: `{info['command']}`.

## Lineage
- Parent version: {lineage['parent_version'] or 'none (first version)'}
- Dataset manifest sha256: `{lineage['dataset_manifest_sha256']}` (sha256 of every file of
  the generated dataset, listed by path; `training.demo.dataset_manifest`)
- Code revision: `{lineage['code_revision'] or 'unknown (not built from a git checkout)'}`

## Metrics at the operating point
Wilson score 95% intervals; a proportion over fewer than {MIN_ESTIMABLE} cases is not estimable.
Each shipped variant is evaluated with the same calibration and threshold.

{metrics_table(info['metrics'], ('test', 'external'))}

### Flag rate, PPV and NPV at assumed prevalences (test split)
From each variant's test sensitivity and specificity; intervals propagate both Wilson
bounds (conservative).

{prevalence_table(info['metrics'], 'test')}

{mixed_stream_text(info.get('mixed_stream'))}### Subgroups (test split, FP32)
Lesion type, size and contrast: that group's positives against all test negatives.
Scanner, mimic and acquisition: that group's own series.

{subgroup_table(info['subgroups'])}

### External validation (held-out scanner style `{info['external_scanner']}`, FP32)

{subgroup_table(info['external_subgroups'])}

## Backends and precisions
A variant ships only if, on the gate split, its flags agree with FP32 ONNX Runtime on at
least {info['gate_min_agreement']:.0%} of series and it unflags no positive FP32 flags.

{gate_table(info['variants'])}

{info['int8_note']}

Golden test: {len(info['golden']['series'])} test series shipped as DICOM (key slice and neighbours), checked on the
box end to end (decode, preprocessing, every variant, aggregation, calibration, flag: the flag
must match and the series score stay within the measured spread x {info['golden']['margin']:g}), plus their
key-image tensors (score within the spread x {info['golden']['margin']:g}, heat-map top-region overlap within
{info['golden']['cam_overlap_margin']:g} of the measured one). Golden outputs measured at build time on:
{info['golden_cpus']}.

## Limits
- Synthetic data only: real scanners, patients, artefacts and post-operative changes are
  absent; performance on real studies is unknown.
- {info['limits']}
- Not for diagnostic use; a triage aid prototype only.
"""
