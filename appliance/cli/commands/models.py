"""``models verify|list|install|shadow|activate|rollback``: model packages."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from appliance import formats
from appliance.cli.commands.common import actor
from appliance.parts import Parts
from appliance.states import ModelState


def register(sub: argparse._SubParsersAction) -> None:
    models = sub.add_parser("models", help="model packages").add_subparsers(dest="action", required=True)
    verify = models.add_parser("verify", help="check a package's signature, hashes and manifest")
    verify.add_argument("package")
    verify.add_argument("--trusted-key", action="append", default=[], help="public key (PEM)")
    verify.set_defaults(func=verify_package)
    listing = models.add_parser("list", help="installed models and their states")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=list_models)
    install = models.add_parser("install", help="verify and install a package (versions only move forward)")
    install.add_argument("package")
    install.add_argument("--activate", action="store_true", help="then activate it (golden test first)")
    install.set_defaults(func=install_package)
    for action, text in (
        ("shadow", "run beside the active model, never shown or sent"),
        ("activate", "golden-test on every backend, pick the fastest, make active"),
    ):
        change = models.add_parser(action, help=text)
        change.add_argument("model_id")
        change.add_argument("version")
        change.set_defaults(func=change_state)
    rollback = models.add_parser("rollback", help="go back to the previous version (explicit)")
    rollback.add_argument("model_id")
    rollback.set_defaults(func=change_state)


def verify_package(args: argparse.Namespace, parts: Parts) -> int:
    from appliance.errors import PackageError
    from appliance.models.package import verify_package

    keys = [Path(k) for k in args.trusted_key] or list(parts.settings.models.trusted_keys)
    if not keys:
        raise PackageError(
            "no trusted key to check the signature with: pass --trusted-key KEY.pem, or set [models] trusted_keys "
            "in the configuration (APPLIANCE_MODELS_TRUSTED_KEYS in the environment)"
        )
    manifest = verify_package(Path(args.package), keys)
    print(f"ok: {manifest.id} {manifest.version} ({manifest.task}), signature and hashes verified")
    return 0


def list_models(args: argparse.Namespace, parts: Parts) -> int:
    models = parts.registry().models()
    if args.json:
        rows = [
            {
                "id": m.id,
                "version": m.version,
                "state": m.state,
                "package_sha256": m.package_sha256,
                "finding": m.manifest.finding,
                "selection": m.selection,
            }
            for m in models
        ]
        print(json.dumps(rows, indent=2))
        return 0
    if not models:
        print("no model installed (appliance models install PKG)")
        return 0
    print(f"{'MODEL':<28} {'VERSION':<10} {'STATE':<10} {'BACKEND':<22} {'THRESHOLD':<10} FINDING")
    for m in models:
        chosen = m.selection["chosen"] if m.selection else "-"
        threshold = formats.score(m.manifest.operating_point.threshold)
        finding = formats.finding(m.manifest.finding)
        print(f"{m.id:<28} {m.version:<10} {m.state:<10} {chosen:<22} {threshold:<10} {finding}")
    return 0


def install_package(args: argparse.Namespace, parts: Parts) -> int:
    registry = parts.registry()
    model = registry.install(Path(args.package), actor())
    print(f"installed {model.label} ({model.state})")
    if not args.activate and model.state == ModelState.INSTALLED:
        print(
            f"it reads no series until it is put in shadow (appliance models shadow {model.id} {model.version}) "
            f"or made active (appliance models activate {model.id} {model.version})"
        )
    if args.activate:
        model = registry.activate(model.id, model.version, actor())
        print(f"{model.label} is active on {(model.selection or {}).get('chosen', '-')}")
    return 0


def change_state(args: argparse.Namespace, parts: Parts) -> int:
    registry = parts.registry()
    if args.action == "rollback":
        model = registry.rollback(args.model_id, actor())
    else:
        model = getattr(registry, args.action)(args.model_id, args.version, actor())
    chosen = model.selection["chosen"] if model.selection else "-"
    print(f"{model.label} is {model.state} on {chosen}")
    for trial in (model.selection or {}).get("trials", []):
        speed = (
            f"{formats.ms(trial['ms_per_image'])}/image"
            if trial["ms_per_image"]
            else trial.get("error") or "failed golden test"
        )
        print(f"  {trial['backend']}/{trial['device']}/{trial['precision']}: {speed}")
    return 0
