"""``python -m training COMMAND``: keys, signing, data, training and demo packages.

Commands
--------
keygen --out KEY                 new ed25519 key pair (KEY private, KEY with .pub public)
sign PKG --key KEY [--out OUT]   re-sign a package with KEY (in place by default)
verify PKG [--trusted-key PUB]   verify a package; print its manifest summary
generate MODEL --out DIR [--seed N] [--quick]
                                 write a spec's synthetic labelled DICOM folder (MODEL:
                                 head-ct, chest-cr or a spec file with a [generator])
build SPEC.toml --data FOLDER [--out DIR] [--key KEY] [--work DIR] [--card-dir DIR] [--release]
           [--tracking-uri URI] [--ledger FILE]
                                 build a model package from a spec file and a labelled DICOM
                                 folder: intake checks, training, evaluation, the sealed read,
                                 model and dataset cards, signature; an MLflow run
train head-ct|chest-cr --data DIR --out CKPT [--quick] [--epochs N]
                                 train on a labelled folder (also under torchrun)
build-demo head-ct|chest-cr --out DIR --key KEY --work DIR [--card-dir DIR] [--release]
           [--tracking-uri URI] [--ledger FILE] [--quick]
                                 build of a demo's spec (training/specs/) from its generator's
                                 folder (generated once into the dataset cache); --release
                                 refuses uncommitted code and an unregistered sealed test set
experiment MODEL --name NAME [--data FOLDER] [--set KEY=VALUE ...] [--train-share F] [--tracking-uri URI]
                                 train and evaluate a variant of the spec on its development
                                 splits (never the sealed set) as an MLflow run; KEY is a spec
                                 field, train.FIELD or input.FIELD, VALUE JSON or text
stability PACKAGE --data FOLDER [--trusted-key PUB] [--first N] [--limit N]
                                 score a labelled folder with every variant of a package,
                                 plain and perturbed (1 HU noise, 1e-6 relative): flags that
                                 flip, and series near the threshold
sealed-hash head-ct|chest-cr [--quick]
                                 generate the sealed test set (if not cached) and print its
                                 content sha256, to register it in the spec; reads no pixel
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

from appliance.errors import PackageError
from appliance.models.package import verify_package


def _spec(args):
    """The spec ``args.model`` names: a demo (``head-ct``, ``chest-cr``; ``--quick`` for its
    test size) or a spec file."""
    from training.demo import DEMOS
    from training.specfile import load_spec

    if args.model in DEMOS:
        spec = DEMOS[args.model](quick=args.quick)
    elif args.quick:
        raise SystemExit("--quick is for the demos (head-ct, chest-cr), not a spec file")
    else:
        spec = load_spec(Path(args.model))
    if getattr(args, "seed", None) is not None:
        spec = replace(spec, generator=replace(spec.generator, seed=args.seed))
    return spec


def cmd_keygen(args: argparse.Namespace) -> int:
    from training.package import generate_keypair

    priv, pub = generate_keypair(args.out)
    print(f"private key {priv}\npublic key  {pub}")
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    from training.package import load_private_key, resign_package

    m = resign_package(args.package, args.out or args.package, load_private_key(args.key))
    print(f"signed {args.out or args.package} with key {m.signing_key_id}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    try:
        m = verify_package(args.package, args.keys)
    except PackageError as e:
        print(f"REFUSED: {e}", file=sys.stderr)
        return 1
    print(json.dumps({"id": m.id, "version": m.version, "signing_key_id": m.signing_key_id,
                      "variants": [f"{x.backend}/{x.precision}" for x in m.variants],
                      "trusted": args.keys is not None}, indent=2))
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from training.datasets import generate

    spec = _spec(args)
    if spec.generator is None:
        raise SystemExit(f"{args.model}: the spec has no [generator] table")
    generate(spec.generator, args.out)
    print(f"wrote {args.out}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import torch.distributed as dist

    from training.data.folder import load_folder, split_by_patient
    from training.train import save_checkpoint, train

    spec = _spec(args)
    cfg = replace(spec.train, epochs=args.epochs) if args.epochs else spec.train
    splits = split_by_patient(load_folder(args.data, spec.input), spec.train.seed, spec.fractions,
                              names=("train", "val", "calibration", "gate"), external_scanner=spec.external_scanner)
    t0 = time.perf_counter()
    model, history = train(splits["train"], splits["val"], cfg, spec.aggregation.apply,
                           log=lambda r: print(json.dumps(r), flush=True))
    rank = dist.get_rank() if dist.is_initialized() else 0
    if rank == 0:
        save_checkpoint(args.out, model, {"history": history, "seconds": time.perf_counter() - t0, "model": args.model})
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    return 0


def _build(args: argparse.Namespace, spec, data: Path | None) -> int:
    """``build`` and ``build-demo``: the same build, from a given folder or the generator's."""
    from training.build import build
    from training.errors import BuildError
    from training.sealed import LEDGER

    try:
        info = build(spec, args.out, args.key, args.work, release=args.release, card_dir=args.card_dir,
                     ledger=args.ledger or LEDGER, tracking_uri=args.tracking_uri, data=data,
                     command=args.command or shlex.join(["python", "-m", "training", *args.argv]))
    except BuildError as exc:
        print(f"build refused: {exc}", file=sys.stderr)
        return 1
    print(f"package {info['package']}\nMLflow run {info['run_id']}")
    return 0


def cmd_build_demo(args: argparse.Namespace) -> int:
    return _build(args, _spec(args), None)


def cmd_build(args: argparse.Namespace) -> int:
    from training.errors import SpecError
    from training.package import generate_keypair
    from training.specfile import load_spec

    try:
        spec = load_spec(args.spec)
    except SpecError as exc:
        print(f"build refused: {exc}", file=sys.stderr)
        return 1
    home = Path("var") / "builds" / f"{spec.id}-{spec.version}"
    args.out = args.out or home
    args.work = args.work or home / "work"
    if args.key is None:
        args.key = Path(args.work) / "build-signing.key"
        if not args.key.exists():
            generate_keypair(args.key)
        print(f"no --key: signing with a new key {args.key} (a box trusts it only once given "
              f"{args.key.with_suffix('.pub')})", file=sys.stderr)
    return _build(args, spec, args.data)


def parse_settings(pairs: list[str]) -> dict:
    """``KEY=VALUE`` pairs as a dict, each VALUE read as JSON when it parses, else as text (pure)."""
    out = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"--set wants KEY=VALUE, got {pair!r}")
        try:
            out[name] = json.loads(text)
        except json.JSONDecodeError:
            out[name] = text
    return out


def cmd_experiment(args: argparse.Namespace) -> int:
    from training.build import experiment
    from training.demo import replace_spec

    spec = replace_spec(_spec(args), **parse_settings(args.set or []))
    report = experiment(spec, Path(args.work or f"var/experiments/{spec.id}/{args.name}"), name=args.name,
                        train_share=args.train_share, tracking_uri=args.tracking_uri, data=args.data,
                        command=shlex.join(["python", "-m", "training", *args.argv]))
    print(json.dumps({"run_id": report["run_id"], "operating_point": report["operating_point"],
                      "misses": len(report["misses"])}, indent=2, default=float))
    return 0


def cmd_stability(args: argparse.Namespace) -> int:
    from training.stability import stability_report

    report = stability_report(args.package, args.keys, args.data, args.first, args.limit)
    print(json.dumps(report, indent=2, default=float))
    return 0


def cmd_sealed_hash(args: argparse.Namespace) -> int:
    from training.sealed import open_sealed

    sealed = _spec(args).sealed
    dataset = open_sealed(sealed)
    registered = "registered" if sealed.sha256 == dataset.sha256 else "NOT registered in the spec"
    print(f"{sealed.name} {dataset.sha256} ({registered}; {dataset.path})")
    return 0


def _build_options(c: argparse.ArgumentParser, required: bool) -> None:
    default = "" if required else " (default var/builds/ID-VERSION/...)"
    c.add_argument("--out", type=Path, required=required, help="package output folder" + default)
    c.add_argument("--key", type=Path, required=required,
                   help="ed25519 private key" + ("" if required else " (default: a new one in the work folder)"))
    c.add_argument("--work", type=Path, required=required, help="scratch folder (model files, cards)" + default)
    c.add_argument("--card-dir", type=Path, help="also write the model and dataset cards here")
    c.add_argument("--command", default="", help="the command line to record in the model card")
    c.add_argument("--release", action="store_true",
                   help="a release: committed code only, the sealed set registered, the read logged as such")
    c.add_argument("--tracking-uri", help="MLflow tracking URI (default: SQLite under var/mlflow)")
    c.add_argument("--ledger", type=Path, help="the sealed-read ledger (default: the repository's)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("keygen", help="create an ed25519 signing key pair")
    k.add_argument("--out", type=Path, required=True, help="private key path; the public key gets .pub")
    k.set_defaults(func=cmd_keygen)
    s = sub.add_parser("sign", help="re-sign a package")
    s.add_argument("package", type=Path)
    s.add_argument("--key", type=Path, required=True)
    s.add_argument("--out", type=Path)
    s.set_defaults(func=cmd_sign)
    v = sub.add_parser("verify", help="verify a package")
    v.add_argument("package", type=Path)
    v.add_argument("--trusted-key", type=Path, action="append", dest="keys")
    v.set_defaults(func=cmd_verify)
    st = sub.add_parser("stability", help="flags that flip under tiny perturbations, on a labelled folder")
    st.add_argument("package", type=Path)
    st.add_argument("--data", type=Path, required=True, help="a labelled DICOM folder (never a sealed set)")
    st.add_argument("--trusted-key", type=Path, action="append", dest="keys")
    st.add_argument("--first", type=int, default=0, help="skip this many series (in series UID order)")
    st.add_argument("--limit", type=int, help="score at most this many series")
    st.set_defaults(func=cmd_stability)
    b = sub.add_parser("build", help="build a model package from a spec file and a labelled DICOM folder")
    b.add_argument("spec", type=Path, help="the model spec (TOML; see training/specs/ and docs/training.md)")
    b.add_argument("--data", type=Path, required=True, help="the labelled DICOM folder (DICOM files + labels.csv)")
    _build_options(b, required=False)
    b.set_defaults(func=cmd_build)
    for name, func in (("generate", cmd_generate), ("train", cmd_train), ("build-demo", cmd_build_demo),
                       ("sealed-hash", cmd_sealed_hash), ("experiment", cmd_experiment)):
        c = sub.add_parser(name)
        c.add_argument("model", help="head-ct, chest-cr (the demos) or a spec file")
        c.add_argument("--quick", action="store_true", help="tiny sizes (tests)")
        c.add_argument("--seed", type=int)
        c.set_defaults(func=func)
        if name == "generate":
            c.add_argument("--out", type=Path, required=True)
        if name == "train":
            c.add_argument("--data", type=Path, required=True)
            c.add_argument("--out", type=Path, required=True, help="checkpoint file")
            c.add_argument("--epochs", type=int)
        if name == "build-demo":
            _build_options(c, required=True)
        if name == "experiment":
            c.add_argument("--name", required=True, help="the run's name (and its folder under var/experiments)")
            c.add_argument("--set", action="append", metavar="KEY=VALUE", help="change a spec setting")
            c.add_argument("--train-share", type=float, default=1.0, help="share of the train patients kept")
            c.add_argument("--tracking-uri", help="MLflow tracking URI (default: SQLite under var/mlflow)")
            c.add_argument("--work", type=Path, help="scratch folder (default var/experiments/ID/NAME)")
            c.add_argument("--data", type=Path, help="the labelled DICOM folder (default: the spec's generator's)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(argv or sys.argv[1:])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
