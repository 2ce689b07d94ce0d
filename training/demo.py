"""What a model build is held to (:class:`DemoSpec`, read from a spec file by
:mod:`training.specfile`), and the two demo triage models.

A :class:`DemoSpec` fixes everything a build (:mod:`training.build`) needs: the finding,
its SR code and its indication (:mod:`training.indication`), the input, the development
data (a labelled folder, or a seeded generator's, cached), the sealed test set (registered
by hash), the training settings, the splits, the targets on the sealed set, the routing
rule the package proposes, and the words of the card. The demos are the spec files
``training/specs/head-ct.toml`` and ``chest-cr.toml``; ``quick`` versions are tiny
(32-pixel inputs, a few dozen patients) for the tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from appliance.models.manifest import Aggregation, InputSpec
from training.data.cr_synth import CRConfig
from training.data.ct_synth import CTConfig
from training.evaluate import SUBGROUP_ATTRIBUTES
from training.sealed import SealedSet
from training.train import TrainConfig

DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"


@dataclass(frozen=True)
class Targets:
    """What a package must show on its sealed test set, for every variant it ships: the
    point estimates and the Wilson 95 % lower bounds of in-indication sensitivity and of
    specificity, the flag rate at ``prevalence``, and the share of flags that may flip
    under the stability perturbations (:mod:`training.score`)."""

    sensitivity: float
    sensitivity_lower: float
    specificity: float
    specificity_lower: float
    max_flag_rate: float = 0.20
    prevalence: float = 0.10
    max_flip: float = 0.01


@dataclass(frozen=True)
class DemoSpec:
    """Everything that defines one demo model build."""

    id: str
    version: str
    finding: str
    labels: tuple[str, str]
    indication: str
    input: InputSpec
    aggregation: Aggregation
    #: The seeded generator of the development data; ``None`` for a spec trained on a
    #: labelled folder it is given (``python -m training build SPEC --data FOLDER``).
    generator: CTConfig | CRConfig | None
    sealed: SealedSet
    train: TrainConfig
    #: Shares of the patients (after the external scanner's) for train, val, calibration, gate.
    fractions: tuple[float, float, float, float]
    targets: Targets
    intended_use: str
    not_for: str
    data_desc: str
    limits: str
    #: Backend/precision variants built; the gate decides which ship. FP32 ONNX Runtime
    #: is always built: every other is compared with it.
    variants: tuple[tuple[str, str], ...] = (("onnxruntime", "fp32"), ("openvino", "int8"))
    #: Training reads one image per this many mm of a thinner-sliced series (``None``: all).
    thin_mm: float | None = None
    #: Training images that calibrate quantisation.
    calibration_images: int = 512
    golden_per_class: int = 2
    #: Write the training data's ranges as the manifest's ``input_constraints``. Quick
    #: builds (test fixtures fed with series of other sizes) leave them out.
    constrain_inputs: bool = True
    #: Scanner style (``Manufacturer ManufacturerModelName``) held out of every split but ``external``.
    external_scanner: str = ""
    #: At most this many external series are scored (a fixed random subset; ``None``: all).
    external_cap: int | None = None
    #: The version this one replaces (lineage); ``None`` for a first version.
    parent_version: str | None = None
    #: Series of the mixed stream sent to an appliance after the build (0: none), and its seed.
    mixed_stream_series: int = 0
    mixed_stream_seed: int = 0
    #: The finding's code for the SR (value, scheme designator, meaning); ``None``: the
    #: box looks it up by the finding's words.
    finding_code: tuple[str, str, str] | None = None
    #: The ``labels.csv`` column holding each series' indication class (``in-indication``,
    #: ``sub-indication``, ``negative``); a folder without it takes ``label`` (1 in, 0 negative).
    indication_column: str = "indication"
    #: The ``labels.csv`` columns the card and the metrics break down by.
    subgroups: tuple[str, ...] = SUBGROUP_ATTRIBUTES
    #: A file (``series_instance_uid,split``) that deals the series into splits, instead of
    #: dealing patients by ``fractions``; intake checks no patient straddles two splits.
    split_file: Path | None = None
    #: The routing rule the package proposes (``appliance.triage.routing.RoutingRule``'s
    #: fields but ``model``), written into its provenance and card; ``None``: none proposed.
    routing: dict | None = None
    #: Sealed test sets that earlier releases read and that are spent now (the ledger shows
    #: their reads): registered by generator and content hash, their series join the train
    #: split (but the external scanner's, which stays held out).
    retired: tuple[SealedSet, ...] = ()

    def input_desc(self) -> str:
        """The model's input in words, for the card."""
        spec = self.input
        if spec.kind == "ct_slice":
            wins = ", ".join(f"{w.name} {w.center:g}/{w.width:g}" + (f" with everything above {w.zero_above:g} HU at 0"
                                                                       if w.zero_above is not None else "")
                             for w in spec.windows)
            slab = (f", averaged with its neighbours over a {spec.slab_mm:g} mm slab (thinner slices read as one "
                    f"{spec.slab_mm:g} mm slice)" if spec.slab_mm else "")
            k = spec.context_slices
            context = (f"; with the {k} {'slab' if spec.slab_mm else 'slice'}{'s' if k > 1 else ''} above and below "
                       f"as context ({spec.channels} channels)" if k else "")
            return (f"one axial slice, {len(spec.windows)} HU windows (centre/width: {wins}), "
                    f"{spec.size}x{spec.size}{slab}{context}")
        return f"one radiograph normalised to [0, 1] (0.5-99.5 percentiles, MONOCHROME1 inverted), {spec.size}x{spec.size}"

    def aggregation_desc(self) -> str:
        images = "slice scores" if self.input.kind == "ct_slice" else "scores of the series' images (one per study here)"
        agg = self.aggregation
        return f"maximum of the {images}" if agg.method == "max" else f"mean of the top {agg.k} {images}"

    def objective_desc(self) -> str:
        cfg = self.train
        hard = (f", {cfg.hard_negative_share:.0%} of them drawn by how positive the model last scored them"
                if cfg.hard_negative_share else "")
        text = (f"Logistic loss on the image score, each epoch over every positive image and "
                f"{cfg.negatives_per_positive:g} negatives per positive{hard}")
        if cfg.map_weight:
            text += (f"; plus (weight {cfg.map_weight:g}) a cell-wise loss on the activation map against the "
                     "generator's lesion maps: cells away from the lesion are negatives, cells it fills positives")
        if self.thin_mm:
            text += f"; a thin-sliced series gives one training image per {self.thin_mm:g} mm"
        return text + "."


def quick_train(seed: int) -> TrainConfig:
    """Training of the quick (test-fixture) models: a few seconds, enough steps to learn
    something (their scores must move when the input does: the golden checks depend on it),
    no shifts (at 32 pixels a shift of a few pixels moves the anatomy as much as a finding)."""
    return TrainConfig(seed=seed, epochs=30, lr=5e-3, keep_last=True, max_shift=0, widths=(8, 8, 8, 8))


def _quick(spec: DemoSpec, generator: CTConfig | CRConfig, sealed: SealedSet) -> DemoSpec:
    """A demo spec at test-fixture size: tiny data and images, a few seconds of training,
    no input constraints (fixtures feed it series of other sizes), no mixed stream, no
    retired sealed sets (full-size data)."""
    from dataclasses import replace

    return replace(spec, version="1.0.0", parent_version=None, generator=generator, sealed=sealed,
                   input=spec.input.model_copy(update={"size": 32}), train=quick_train(spec.train.seed), thin_mm=None,
                   external_cap=None, constrain_inputs=False, mixed_stream_series=0, retired=())


def head_ct(quick: bool = False) -> DemoSpec:
    """Head-CT intracranial haemorrhage triage (slice model, series score = max), from
    ``training/specs/head-ct.toml``."""
    from training.specfile import SPECS, load_spec

    spec = load_spec(SPECS / "head-ct.toml")
    if not quick:
        return spec
    small = dict(matrix=64, thicknesses_mm=(12.0,), coverage_mm=(100.0, 110.0))
    assert spec.generator is not None and spec.sealed.generator is not None
    return _quick(spec, CTConfig(n_patients=96, seed=spec.generator.seed, **small),
                  SealedSet("head-ct-sealed-quick", CTConfig(n_patients=24, seed=spec.sealed.generator.seed, **small)))


def chest_cr(quick: bool = False) -> DemoSpec:
    """Chest radiograph pneumothorax triage (one image per study), from
    ``training/specs/chest-cr.toml``."""
    from training.specfile import SPECS, load_spec

    spec = load_spec(SPECS / "chest-cr.toml")
    if not quick:
        return spec
    assert spec.generator is not None and spec.sealed.generator is not None
    return _quick(spec, CRConfig(n_patients=48, seed=spec.generator.seed, columns=(64, 64)),
                  SealedSet("chest-cr-sealed-quick", CRConfig(n_patients=24, seed=spec.sealed.generator.seed,
                                                              columns=(64, 64))))


DEMOS: dict[str, Callable[..., DemoSpec]] = {"head-ct": head_ct, "chest-cr": chest_cr}


def replace_spec(spec: DemoSpec, **changes) -> DemoSpec:
    """``spec`` with ``changes``; dotted keys (``train.epochs``, ``input.size``) change a field
    of the spec's training settings or input (pure). An input change that alters the
    number of windows keeps ``channels`` in step."""
    from dataclasses import replace

    train, inputs, top = {}, {}, {}
    for name, value in changes.items():
        if name.startswith("train."):
            train[name.removeprefix("train.")] = tuple(value) if isinstance(value, list) else value
        elif name.startswith("input."):
            inputs[name.removeprefix("input.")] = value
        else:
            top[name] = value
    if train:
        top["train"] = replace(spec.train, **train)
    if inputs:
        data = {**spec.input.model_dump(), **inputs}
        if "windows" in inputs and spec.input.kind == "ct_slice":
            data["channels"] = len(data["windows"]) * spec.input.slices_per_input
        top["input"] = InputSpec.model_validate(data)
    return replace(spec, **top)
