"""A model spec file (TOML) read into the :class:`~training.demo.DemoSpec` a build runs.

One file says everything a build needs to know about a model but its data: what it finds
and for whom, what it reads, how it is trained, split, judged and routed. Tables:

``[model]``
    ``id``, ``version``, ``parent_version``, ``finding``, ``finding_code`` (value, scheme,
    meaning: what the SR says), ``labels`` (the negative and positive words),
    ``indication``, ``intended_use``, ``not_for``, ``data_desc``, ``limits``.
``[input]``
    The package's :class:`~appliance.models.manifest.InputSpec` (``kind``, ``modalities``,
    ``body_part``, ``sop_class_uids``, ``windows``, ``size``, ``slab_mm``,
    ``context_slices``); ``channels`` follows from the windows and context when left out.
``[aggregation]``
    ``method`` (``max`` or ``top-k-mean``) and ``k``.
``[train]``
    :class:`~training.train.TrainConfig` (``seed``, ``epochs``, ``lr``, ``widths``, ...).
``[labels]``
    ``indication`` (the column of each series' indication class) and ``subgroups`` (the
    columns the card and the metrics break down by).
``[splits]``
    ``fractions`` (train, val, calibration, gate: shares of the patients) or ``file`` (a
    CSV ``series_instance_uid,split``), ``external_scanner``, ``external_cap``.
``[targets]``
    :class:`~training.demo.Targets` on the sealed test set.
``[sealed]``
    ``name``, ``sha256`` (registered content hash), and ``folder`` (a labelled folder) or
    a ``[sealed.generator]`` table.
``[routing]``
    The routing rule the package proposes (:class:`appliance.triage.routing.RoutingRule`
    without ``model``).
``[build]``
    ``variants``, ``thin_mm``, ``calibration_images``, ``golden_per_class``,
    ``constrain_inputs``, ``mixed_stream_series``, ``mixed_stream_seed``.
``[[retired]]``
    Optional: sealed sets that earlier releases read and that are spent now, each with
    ``name``, ``sha256`` and a ``[retired.generator]`` table or ``folder``; their series
    join the train split (the external scanner's stay out). Never the ``[sealed]`` set.
``[generator]``
    Optional: a synthetic generator (``kind = "head-ct"`` or ``"chest-cr"`` and its
    configuration) that writes a labelled folder for this spec (``python -m training
    generate SPEC --out DIR``).

Relative paths (``splits.file``, ``sealed.folder``) are read from the spec file's folder.
Every error names the spec file and the key that is wrong.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from appliance.models.manifest import Aggregation, InputSpec
from appliance.triage.routing import RoutingRule
from training.data.cr_synth import CRConfig
from training.data.ct_synth import CTConfig
from training.demo import DemoSpec, Targets
from training.errors import SpecError
from training.sealed import SealedSet
from training.train import TrainConfig

#: Spec files kept in the repository (the demos').
SPECS = Path(__file__).resolve().parent / "specs"
GENERATORS = {"head-ct": CTConfig, "chest-cr": CRConfig}
TABLES = ("model", "input", "aggregation", "train", "labels", "splits", "targets", "sealed", "routing", "build",
          "generator", "retired")
_MODEL_KEYS = ("id", "version", "parent_version", "finding", "finding_code", "labels", "indication", "intended_use",
               "not_for", "data_desc", "limits")
_BUILD_KEYS = ("variants", "thin_mm", "calibration_images", "golden_per_class", "constrain_inputs",
               "mixed_stream_series", "mixed_stream_seed")


def _tuples(value: Any) -> Any:
    """TOML arrays as tuples, nested ones too (the dataclasses hold tuples)."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _dataclass(cls, table: dict, where: str) -> Any:
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - fields)
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(fields))}")
    try:
        return cls(**{k: _tuples(v) for k, v in table.items()})
    except (TypeError, ValueError) as exc:
        raise SpecError(f"{where}: {exc}") from exc


def _only(table: dict, known: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(known)}")


def generator_of(table: dict | None, where: str) -> CTConfig | CRConfig | None:
    """A ``[generator]`` table as the generator's configuration (``None`` for none)."""
    if table is None:
        return None
    table = dict(table)
    kind = table.pop("kind", None)
    if kind not in GENERATORS:
        raise SpecError(f"{where}.kind: must be one of {', '.join(GENERATORS)}, got {kind!r}")
    return _dataclass(GENERATORS[kind], table, where)


def here_of(path: Path) -> Path:
    """The folder a spec file's relative paths are read from."""
    return path.resolve().parent


def _retired(table: dict, sealed: dict, here: Path, where: str) -> SealedSet:
    """One ``[[retired]]`` table: a spent sealed set, registered by hash, never the live one."""
    table = dict(table)
    _only(table, ("name", "sha256", "folder", "generator"), where)
    for key in ("name", "sha256"):
        if key not in table:
            raise SpecError(f"{where}: {key} is missing (a retired set is registered by its content hash)")
    if ("folder" in table) == ("generator" in table):
        raise SpecError(f"{where}: give either folder or a generator table")
    if table["name"] == sealed["name"] or table["sha256"] == sealed.get("sha256") or (
            "generator" in table and table["generator"] == sealed.get("generator")):
        raise SpecError(f"{where}: {table['name']} is the [sealed] set; a set retires when a new one is registered")
    return SealedSet(table["name"], generator_of(table.get("generator"), f"{where}.generator"), sha256=table["sha256"],
                     folder=here / table["folder"] if "folder" in table else None)


def load_spec(path: Path) -> DemoSpec:
    """Read and check a spec file.

    Raises
    ------
    SpecError
        Naming the file and the key that is missing or wrong.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SpecError(f"{path}: cannot read the spec: {exc}") from exc
    return spec_from_dict(data, path)


def spec_from_dict(data: dict, path: Path) -> DemoSpec:
    """A spec from the parsed TOML ``data`` of the file at ``path`` (pure but for the
    paths it resolves against the file's folder)."""
    where = str(path)
    _only(data, TABLES, where)
    for table in ("model", "input", "train", "targets", "sealed"):
        if table not in data:
            raise SpecError(f"{where}: no [{table}] table")
    model = dict(data["model"])
    _only(model, _MODEL_KEYS, f"{where} [model]")
    for key in ("id", "version", "finding", "labels", "indication", "intended_use", "not_for", "data_desc", "limits"):
        if key not in model:
            raise SpecError(f"{where} [model]: {key} is missing")
    if len(model["labels"]) != 2:
        raise SpecError(f"{where} [model].labels: must be two words (negative, positive)")
    code = model.get("finding_code")
    if code is not None and (len(code) != 3 or not all(isinstance(c, str) and c.strip() for c in code)):
        raise SpecError(f"{where} [model].finding_code: must be [code value, scheme designator, meaning], none empty")
    inputs = dict(data["input"])
    if "channels" not in inputs:
        windows = len(inputs.get("windows", [])) or 1
        inputs["channels"] = windows * (2 * int(inputs.get("context_slices", 0)) + 1)
    try:
        input_spec = InputSpec.model_validate(inputs)
        aggregation = Aggregation.model_validate(data.get("aggregation", {"method": "max"}))
    except ValidationError as exc:
        raise SpecError(f"{where} [input]/[aggregation]: {exc}") from exc
    labels = dict(data.get("labels", {}))
    _only(labels, ("indication", "subgroups"), f"{where} [labels]")
    splits = dict(data.get("splits", {}))
    _only(splits, ("fractions", "file", "external_scanner", "external_cap"), f"{where} [splits]")
    if "fractions" not in splits and "file" not in splits:
        raise SpecError(f"{where} [splits]: give fractions (train, val, calibration, gate) or file")
    fractions = tuple(splits.get("fractions", (0.5, 0.1, 0.25, 0.15)))
    if len(fractions) != 4 or abs(sum(fractions) - 1) > 1e-6:
        raise SpecError(f"{where} [splits].fractions: four shares (train, val, calibration, gate) adding up to 1")
    sealed = dict(data["sealed"])
    _only(sealed, ("name", "sha256", "folder", "generator"), f"{where} [sealed]")
    if "name" not in sealed:
        raise SpecError(f"{where} [sealed]: name is missing")
    if ("folder" in sealed) == ("generator" in sealed):
        raise SpecError(f"{where} [sealed]: give either folder or a [sealed.generator] table")
    retired = tuple(_retired(table, sealed, here_of(path), f"{where} [[retired]] {i + 1}")
                    for i, table in enumerate(data.get("retired", [])))
    routing = data.get("routing")
    if routing is not None:
        try:
            RoutingRule.model_validate({**routing, "model": model["id"]})
        except ValidationError as exc:
            raise SpecError(f"{where} [routing]: {exc}") from exc
    build = dict(data.get("build", {}))
    _only(build, _BUILD_KEYS, f"{where} [build]")
    here = here_of(path)
    try:
        return DemoSpec(
            **{k: model[k] for k in _MODEL_KEYS if k in model and k not in ("labels", "finding_code")},
            labels=(model["labels"][0], model["labels"][1]),
            finding_code=_tuples(code) if code is not None else None,
            input=input_spec, aggregation=aggregation,
            generator=generator_of(data.get("generator"), f"{where} [generator]"),
            sealed=SealedSet(sealed["name"], generator_of(sealed.get("generator"), f"{where} [sealed.generator]"),
                             sha256=sealed.get("sha256"),
                             folder=here / sealed["folder"] if "folder" in sealed else None),
            train=_dataclass(TrainConfig, data["train"], f"{where} [train]"),
            fractions=fractions,
            targets=_dataclass(Targets, data["targets"], f"{where} [targets]"),
            external_scanner=splits.get("external_scanner", ""), external_cap=splits.get("external_cap"),
            split_file=here / splits["file"] if "file" in splits else None,
            indication_column=labels.get("indication", "indication"),
            **({"subgroups": tuple(labels["subgroups"])} if "subgroups" in labels else {}),
            routing=routing, retired=retired,
            **{k: _tuples(v) for k, v in build.items()},
        )
    except TypeError as exc:
        raise SpecError(f"{where}: {exc}") from exc
