"""The model card (Markdown), written from a build's evaluation, never by hand.

:func:`model_card` takes the ``info`` dict :meth:`training.build.Builder.info` assembles
(the same ``metrics`` the manifest carries) and formats it; every number in the card comes
from there. The first line is the verdict against the targets on the sealed test set.
Proportions print as ``value (95% Wilson interval) k/n``; one over fewer than
``training.evaluate.MIN_ESTIMABLE`` cases prints as *not estimable* with its counts.
"""

from __future__ import annotations

import json

from training.evaluate import MIN_ESTIMABLE


def fmt_proportion(p: dict | None) -> str:
    """``0.953 (0.872-0.984) 41/43``, or ``not estimable (4/4; < 10 cases)`` (pure)."""
    if p is None:
        return "-"
    if not p["estimable"]:
        return f"not estimable ({p['k']}/{p['n']}; < {MIN_ESTIMABLE} cases)" if p["n"] else "none in this group"
    lo, hi = p["ci95"]
    return f"{p['value']:.3f} ({lo:.3f}-{hi:.3f}) {p['k']}/{p['n']}"


def fmt_count(p: dict | None) -> str:
    """``3/14`` with its share, for rows that are neither sensitivity nor specificity (pure)."""
    if p is None or not p["n"]:
        return "-"
    return f"{p['k']}/{p['n']} ({p['k'] / p['n']:.0%})"


def fmt_interval(v: dict) -> str:
    """``0.153 (0.101-0.226)`` from ``{"value", "ci95"}`` (pure)."""
    lo, hi = v["ci95"]
    return f"{v['value']:.3f} ({lo:.3f}-{hi:.3f})"


def fmt_auc(m: dict) -> str:
    if m["auc"] is None:
        return "not estimable"
    lo, hi = m["auc_ci95"]
    return f"{m['auc']:.3f} ({lo:.3f}-{hi:.3f})"


def _rate(m: dict, prevalence: float) -> float | None:
    table = m["at_prevalence"]
    return table[f"{prevalence:.2f}"]["flag_rate"]["value"] if table else None


def verdict_line(info: dict) -> str:
    """The card's first line: meets / does not meet, with the figures of the variant the
    box runs and of FP32 (pure)."""
    t, verdicts, test = info["targets"], info["verdicts"], info["metrics"]["test"]
    meets = all(v["meets"] for v in verdicts.values())
    box = info["box_variant"]

    def figures(name: str) -> str:
        m, s = test[name], info["stability"][name]
        rate = _rate(m, t["prevalence"])
        return (f"in-indication sensitivity {fmt_proportion(m['sensitivity'])}, specificity "
                f"{fmt_proportion(m['specificity'])}, flag rate at {t['prevalence']:.0%} prevalence "
                f"{'not estimable' if rate is None else f'{rate:.3f}'}, flags flipped by 1 HU noise {s['noise']['k']}/{s['noise']['n']}")

    head = (f"**{'Meets' if meets else 'Does not meet'} its target** on the sealed test set "
            f"({info['sealed']['series']} series, read once by this build) for "
            f"{'every shipped variant' if meets else 'at least one shipped variant'}: ")
    line = head + f"`{box}` (what the box runs where it qualifies) {figures(box)}"
    if box != "onnxruntime/fp32":
        line += f"; `onnxruntime/fp32` {figures('onnxruntime/fp32')}"
    line += (f". Targets: sensitivity >= {t['sensitivity']:g} (lower bound >= {t['sensitivity_lower']:g}), "
             f"specificity >= {t['specificity']:g} (lower bound >= {t['specificity_lower']:g}), flag rate <= "
             f"{t['max_flag_rate']:g} at {t['prevalence']:.0%} prevalence, at most {t['max_flip']:.0%} of flags flipped.")
    misses = [f"`{name}`: " + "; ".join(v["misses"]) for name, v in verdicts.items() if not v["meets"]]
    if misses:
        line += "\n\nShort of the target: " + " | ".join(misses) + "."
    if not info["operating_point"]["meets_both"]:
        line += ("\n\n**No threshold on the calibration split met the sensitivity target and the flag-rate bound "
                 "together**; the operating point keeps sensitivity first.")
    return line


def results_table(metrics: dict[str, dict], prevalence: float) -> str:
    """One row per variant: the figures at the operating point (pure)."""
    rows = ["| variant | in-indication sensitivity | specificity | sub-indication flagged | flagged (all series) | "
            f"flag rate at {prevalence:.0%} prevalence | ROC AUC | ECE |", "|---|---|---|---|---|---|---|---|"]
    for name, m in metrics.items():
        rate = _rate(m, prevalence)
        ece = "-" if m["ece"] is None else f"{m['ece']:.3f}"
        rows.append(f"| {name} | {fmt_proportion(m['sensitivity'])} | {fmt_proportion(m['specificity'])} | "
                    f"{fmt_count(m['sub_indication_flags'])} | {fmt_count(m['flag_rate'])} | "
                    f"{'-' if rate is None else f'{rate:.3f}'} | {fmt_auc(m)} | {ece} |")
    return "\n".join(rows)


def workload_table(metrics: dict[str, dict]) -> str:
    """Flag rate, PPV and flags per true positive at each reported prevalence (pure)."""
    rows = ["| variant | prevalence | flag rate (95% CI) | PPV (95% CI) | flags per true positive (95% CI) |",
            "|---|---|---|---|---|"]
    for name, m in metrics.items():
        table = m["at_prevalence"]
        if table is None:
            rows.append(f"| {name} | - | not estimable | not estimable | not estimable |")
            continue
        for prevalence, v in table.items():
            rows.append(f"| {name} | {float(prevalence):.0%} | {fmt_interval(v['flag_rate'])} | {fmt_interval(v['ppv'])} | "
                        f"{fmt_interval(v['flags_per_true_positive'])} |")
    return "\n".join(rows)


def subgroup_table(subgroups: dict[str, dict[str, dict]]) -> str:
    """One row per subgroup: in-indication sensitivity, specificity, sub-indication flags (pure)."""
    rows = ["| subgroup | in-indication sensitivity | specificity | sub-indication flagged |", "|---|---|---|---|"]
    for attribute, groups in subgroups.items():
        for value, m in groups.items():
            rows.append(f"| {attribute}: {value} | {fmt_proportion(m['sensitivity']) if m['sensitivity']['n'] else '-'} | "
                        f"{fmt_proportion(m['specificity']) if m['specificity'] else '-'} | "
                        f"{fmt_count(m['sub_indication_flags'])} |")
    return "\n".join(rows)


def stability_table(stability: dict[str, dict], max_flip: float) -> str:
    rows = ["| variant | 1 HU Gaussian noise before the windows | inputs x (1 + 1e-6 N(0, 1)) |", "|---|---|---|"]
    for name, s in stability.items():
        rows.append(f"| {name} | {s['noise']['k']} of {s['noise']['n']} flags flipped | "
                    f"{s['relative']['k']} of {s['relative']['n']} flags flipped |")
    return "\n".join(rows) + f"\n\nThe target allows at most {max_flip:.0%} of flags to flip."


def gate_table(variants: list[dict]) -> str:
    """The variant gate: agreement with FP32 on the gate split, calibration figures, the verdict (pure)."""
    head = ["| backend | precision | gate agreement | findings lost | calibration sensitivity | calibration specificity | status |",
            "|---|---|---|---|---|---|---|"]
    rows = [f"| {v['backend']} | {v['precision']} | {v['gate']['agreement']:.4f} "
            f"({v['gate']['n'] - v['gate']['lost'] - v['gate']['gained']}/{v['gate']['n']}) | {v['gate']['lost_positives']} | "
            f"{fmt_proportion(v['calibration']['sensitivity'])} | {fmt_proportion(v['calibration']['specificity'])} | "
            f"{v['status']} |" for v in variants]
    return "\n".join(head + rows)


def counts_text(summary: dict[str, dict[str, int]]) -> str:
    """A dataset's make-up from its labels, one line per attribute (pure)."""
    names = {"indication": "class", "lesion_type": "finding type", "size_group": "finding size", "contrast": "contrast",
             "mimic": "mimic", "acquisition": "slice thickness", "scanner": "scanner"}
    total = sum(summary["indication"].values())
    lines = []
    for attribute, counts in summary.items():
        parts = ", ".join(f"{value} {n} ({n / total:.0%})" for value, n in counts.items())
        lines.append(f"- {names.get(attribute, attribute)}: {parts}")
    return "\n".join(lines)


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


def sealed_source(sealed: dict) -> str:
    """Where the sealed set came from, in words (pure)."""
    if sealed.get("seed") is None:
        return f"kept apart from the development data (`{sealed['name']}`, no patient in both"
    return f"from a seed no other step of any build uses (`{sealed['name']}`, seed {sealed['seed']}"


def use_line(info: dict) -> str:
    """The warning under the verdict: a demonstration on synthetic data, or a model from a
    given folder (pure)."""
    if info.get("synthetic", True):
        return ("**NOT FOR DIAGNOSTIC USE.** A demonstration model trained only on synthetic phantoms\n"
                "generated by `training.data`; it has never seen a real patient image.")
    return ("**NOT FOR DIAGNOSTIC USE** until the site's clinical and regulatory review has accepted it. Trained on\n"
            "the labelled folder described under Data and in the dataset card.")


def split_source(info: dict) -> str:
    """How the splits were dealt (pure)."""
    return f"from the split file `{info['split_file']}`" if info.get("split_file") else f"seed {info['seed']}"


def retired_sentence(info: dict) -> str:
    """Spent sealed sets the train split holds, in a sentence, or nothing (pure)."""
    return "".join(
        f" Train holds the {r['series']} series of `{r['name']}` (content sha256 `{r['sha256'][:12]}...`), a sealed "
        "set that earlier releases read (the ledger lists each read) and that is spent as a test"
        + (f"; its {r['held_out_external']} series of the external scanner are left out" if r["held_out_external"]
           else "") + "." for r in info.get("retired", []))


def external_sentence(info: dict) -> str:
    """The external split in a sentence, or nothing when none was held out (pure)."""
    if not info["split_sizes"]["external"]:
        return ""
    return (f" External: {external_scope(info)} of the\nscanner style `{info['external_scanner']}`, never seen in "
            "training, calibration or threshold choice.")


def routing_text(routing: dict | None) -> str:
    """The routing rule the package proposes, as the routing file's TOML (pure)."""
    if not routing:
        return "None proposed: the site writes its own rule in `firmware-config/routing.toml`."
    lines = ["Proposed for `firmware-config/routing.toml` (a person decides; the box never adds it itself):",
             "", "```toml", "[[rule]]"]
    lines.extend(f"{k} = {json.dumps(v)}" for k, v in routing.items())
    return "\n".join([*lines, "```"])


def external_text(info: dict) -> str:
    """The held-out scanner's figures against the calibration split's, and where its flags
    come from (pure)."""
    if not info["split_sizes"]["external"]:
        return "No scanner style was held out (the spec names none): there are no external figures."
    name = info["box_variant"]
    ext, cal = info["metrics"]["external"][name], info["metrics"]["calibration"][name]
    flagged, n = ext["flag_rate"]["k"], ext["flag_rate"]["n"]
    findings = ext["in_indication"] + ext["sub_indication"]
    fp_ext, fp_cal = ext["fp"] / max(ext["negatives"], 1), cal["fp"] / max(cal["negatives"], 1)
    why = (f"{findings} of its {n} series hold a finding ({findings / max(n, 1):.0%}, against "
           f"{info['targets']['prevalence']:.0%} in a clinical stream), so most of its flags are true ones"
           if findings / max(n, 1) > 0.3 else f"{findings} of its {n} series hold a finding")
    drift = ("its negatives are flagged about as often as the calibration split's"
             if abs(fp_ext - fp_cal) <= 0.05 else
             f"its negatives are flagged {'more' if fp_ext > fp_cal else 'less'} often than the calibration split's "
             f"({ext['fp']}/{ext['negatives']} against {cal['fp']}/{cal['negatives']}): the scanner differs")
    return (f"The held-out scanner style `{info['external_scanner']}` (never in training, calibration or threshold "
            f"choice) had {flagged} of {n} series flagged by `{name}`. {why}; {drift}.")


def external_scope(info: dict) -> str:
    """``every series`` or ``200 of the 400 series`` (a fixed random subset) (pure)."""
    scored, total = info["split_sizes"]["external"], info.get("external_total", info["split_sizes"]["external"])
    return "every series" if scored == total else f"{scored} of the {total} series (a fixed random subset)"


def mixed_stream_text(stream: dict | None, targets: dict) -> str:
    if not stream:
        return ""
    m = stream["metrics"]
    rate = stream["flag_rate"]
    within = "within" if rate["value"] <= targets["max_flag_rate"] else "**above**"
    groups = "\n".join(f"| {name} | {g['series']} | {g['findings']} | {g['flagged']} |"
                       for name, g in stream["by_acquisition"].items())
    table = f"\n| slice thickness | series | with a finding | flagged |\n|---|---|---|---|\n{groups}\n" if groups else ""
    return f"""### Flag rate on a mixed stream, through a real appliance
The signed package was installed and activated on an appliance (`appliance models install --activate`:
golden tests on every variant, `{stream['variant']}` chosen), which then received a fresh stream over
DICOM (seed {stream['seed']}, every scanner style including the external one{', every slice thickness in equal shares' if groups else ''},
{stream['prevalence']:.0%} of patients with a finding of any size): {stream['series']} series, {stream['positives']} with a finding,
**{stream['flagged']} flagged: {fmt_proportion(rate)}**, {within} the bound of {targets['max_flag_rate']:g}. On the stream:
in-indication sensitivity {fmt_proportion(m['sensitivity'])}, specificity {fmt_proportion(m['specificity'])},
sub-indication flagged {fmt_count(m['sub_indication_flags'])}. Final states: {', '.join(f'{k} {v}' for k, v in stream['states'].items())}.
Not analysed: {fmt_proportion(stream['not_analysed'])}; before the hub promotes this release, the boxes running it
in shadow must not exceed the interval's upper end.
{table}
"""


def kept_weights(averaged_epochs: int) -> str:
    """Which weights training kept, as the card's training paragraph says it."""
    if averaged_epochs > 1:
        return f"the mean of the last {averaged_epochs} epochs' weights kept (BatchNorm statistics measured on the mean)"
    return "the last weights kept"


def earlier_reads_text(reads: list[dict[str, str]]) -> str:
    """The set's reads by earlier builds, each with what it found: a set read more than once
    is less of a holdout, and the reader should know by how much."""
    if not reads:
        return "No earlier build read it. "
    lines = "".join(f"\n- {r['utc'][:10]}, {r['model']} ({r['purpose']}): {r['figures']}" for r in reads)
    return (f"Earlier reads of this set ({len(reads)}), each a line of that ledger; a set read more than once is "
            f"less of a holdout by as much:{lines}\n\n")


def model_card(info: dict) -> str:
    """The model card (Markdown) from a build's ``info`` dict (see ``training.build``)."""
    op, cal, lineage, t = info["operating_point"], info["calibration"], info["lineage"], info["targets"]
    test, sealed = info["metrics"]["test"], info["sealed"]
    box = info["box_variant"]
    timings = ", ".join(f"{k.replace('_', ' ')} {v:.0f} s" for k, v in info["timings"].items())
    return f"""# Model card: {info['id']} {info['version']}

{verdict_line(info)}

{use_line(info)}

## Indication
{info['indication']}

**What it is not for.** {info['not_for']}

## Intended use
{info['intended_use']}

## Results on the sealed test set
{sealed['series']} series {sealed_source(sealed)},
content sha256 `{sealed['sha256']}`), read once by this build and logged in
`training/specs/sealed-test-ledger.tsv`. {earlier_reads_text(sealed.get('earlier_reads', []))}Sensitivity counts in-indication series only,
specificity negatives only; flags on sub-indication series are their own column. Wilson 95%
intervals; a proportion over fewer than {MIN_ESTIMABLE} cases is not estimable. ECE: expected
calibration error of the calibrated score (in-indication against negative series, 10 bins).

{results_table(test, t['prevalence'])}

### Workload at assumed prevalences (of in-indication findings)
From each variant's sensitivity and specificity above; intervals propagate both Wilson
bounds (conservative). Flags per true positive: how many series a radiologist opens for
each in-indication finding flagged.

{workload_table(test)}

{mixed_stream_text(info.get('mixed_stream'), t)}### Stability of the flags
Every sealed series scored again, once with Gaussian noise of 1 HU (for a radiograph, one
stored grey level) added to every pixel before the windows, once with every model input
multiplied by (1 + 1e-6 N(0, 1)).

{stability_table(info['stability'], t['max_flip'])}

### Subgroups (sealed test set, `{box}`)
Sensitivity over the group's in-indication series, specificity over its negatives (none
for attributes only findings carry), sub-indication flags apart.

{subgroup_table(info['subgroups'][box])}

### External scanner
{external_text(info)}
{"" if not info['split_sizes']['external'] else chr(10) + results_table(info['metrics']['external'], t['prevalence']) + chr(10)}
## Operating point
Calibrated score >= {op['threshold']:.4f}, chosen on the calibration split with FP32 (never the
sealed set): sensitivity must reach {t['sensitivity']:g} there (true up to a threshold of
{op['threshold_for_sensitivity']:.4f}) and the flag rate at {t['prevalence']:.0%} prevalence stay at or under
{t['max_flag_rate']:g} (true from {'-' if op['threshold_for_flag_rate'] is None else f"{op['threshold_for_flag_rate']:.4f}"});
{'both hold between the two; of those thresholds it takes the one whose smaller margin over the sensitivity and specificity targets (' + format(t['sensitivity'], 'g') + ', ' + format(t['specificity'], 'g') + ') is largest, at the middle (logit units) of the range of such thresholds' if op['meets_both'] else 'no threshold meets both, so the threshold keeps sensitivity first'}.
On calibration: sensitivity {op['sensitivity']:.3f}, specificity {op['specificity']:.3f}, flag rate at
{t['prevalence']:.0%} prevalence {op['flag_rate_at_prevalence']:.3f}.

{results_table(info['metrics']['calibration'], t['prevalence'])}

## Model
- Architecture: `TriageNet` (plain torch; {info['parameters']:,} parameters), input
  {info['input_desc']}; outputs `score` (sigmoid, shape N) and `cam`
  (class-activation map, logit units, {info['cam_size']}x{info['cam_size']}).
- Series score: {info['aggregation_desc']}, then calibrated: Platt scaling
  `sigmoid({cal['a']:.4f} * logit(score) + {cal['b']:.4f})`, fitted on the calibration split's
  {cal['n']} in-indication and negative series. The manifest carries it and the appliance
  applies the same function before thresholding. The calibrated score is a probability at
  that split's mix, not at a clinical prevalence; the box shows it with the threshold,
  never as a probability.

## Data
{info['data_desc']}

Development set, counted from its labels (content sha256 `{lineage['dataset_manifest_sha256']}`):

{counts_text(info['dev_summary'])}

Splits, disjoint by patient ({split_source(info)}): {'; '.join(f"{k} {info['split_sizes'][k]} series ({v})" for k, v in info['split_counts'].items())}.{retired_sentence(info)}
Train fits the weights; val is only watched; calibration fits the calibration and the
operating point; gate decides which quantised variants ship.{external_sentence(info)}

Every file passed intake (decoded through the box's own decode; labels matched to files, no
SOP instance or pixels twice, no patient in two splits); the dataset card
(`DATASET_CARD.md`, beside this card in the package) counts the series per class, subgroup,
scanner, slice thickness and pixel spacing.

Sealed test set, counted from its labels:

{counts_text(sealed['summary'])}

## Routing
{routing_text(info.get('proposed_routing'))}

## Input constraints the appliance enforces
A series outside these ranges (those of the training data) is not scored: the box sends a
"not analysed" notice instead.

{constraints_text(info.get('input_constraints'))}

## Training
{info['objective']}
Seed {info['seed']}, {info['epochs_run']} epochs on a fixed cosine schedule, {kept_weights(info.get('averaged_epochs', 1))}. Whole
build {info['build_seconds']:.0f} s ({timings}) on {info['machine']} (CPU flags: {info['cpu_flags']}).
Rebuild: `{info['command']}`.

## Lineage
- Parent version: {lineage['parent_version'] or 'none (first version)'}
- Development dataset content sha256: `{lineage['dataset_manifest_sha256']}`; sealed test set: `{lineage['sealed_test_sha256']}`
  (sha256 over `sha256  path` of every file; `training.datasets`)
- Code revision: `{lineage['code_revision'] or 'unknown (not built from a git checkout)'}`{'' if info['release'] else ' (not a release build)'}

## Backends and precisions
A quantised variant ships only if, on the gate split, its flags agree with FP32 ONNX Runtime
on at least {info['gate_min_agreement']:.0%} of series and it unflags no finding FP32 flags; and
if, on the calibration split, it finds every in-indication series FP32 finds there (the rule
the threshold was chosen by).

{gate_table(info['variants'])}

{info['int8_note']}

Golden test: {len(info['golden']['series'])} gate-split series shipped as DICOM (key slice and neighbours), checked on
the box end to end (decode, preprocessing, every variant, aggregation, calibration, flag),
plus their key-image tensors (score within the measured spread x {info['golden']['margin']:g}, heat-map
top-region overlap within {info['golden']['cam_overlap_margin']:g} of the measured one). Golden outputs measured
at build time on: {info['golden_cpus']}.

## Limits
- Synthetic data only: real scanners, patients, artefacts and post-operative changes are
  absent; performance on real studies is unknown.
- {info['limits']}
- Not for diagnostic use; a triage aid prototype only.
"""
