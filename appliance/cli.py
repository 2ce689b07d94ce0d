"""The ``appliance`` command."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path

from appliance.config import Settings, load_settings, settings_as_dict
from appliance.errors import ApplianceError


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # pynetdicom's INFO/DEBUG output echoes request identifiers; keep it to problems.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)


def _run_listener(settings: Settings) -> int:
    from appliance.dicom.listener import Listener

    listener = Listener(settings)
    listener.start()
    signal.signal(signal.SIGTERM, listener.request_stop)
    signal.signal(signal.SIGINT, listener.request_stop)
    listener.wait()
    listener.stop()
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    """Everything in one process tree; today that is the DICOM listener."""
    return _run_listener(settings)


def cmd_listener(args: argparse.Namespace, settings: Settings) -> int:
    return _run_listener(settings)


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from appliance.audit.db import open_database
    from appliance.status import collect_status

    status = collect_status(open_database(settings.db_path))
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    print(f"instances received: {status['instances_received']}")
    for s in status["series"]:
        print(f"{s['state']:<12} {s['modality']:<4} {s['instances']:>6}  {s['series_instance_uid']}")
    return 0


def cmd_config_validate(args: argparse.Namespace) -> int:
    load_settings(Path(args.path) if args.path else None)
    print("configuration is valid")
    return 0


def cmd_config_show(args: argparse.Namespace, settings: Settings) -> int:
    print(json.dumps(settings_as_dict(settings), indent=2))
    return 0


def cmd_models_verify(args: argparse.Namespace, settings: Settings) -> int:
    from appliance.inference.package import verify_package

    keys = [Path(k) for k in args.trusted_key] or list(settings.models.trusted_keys)
    manifest = verify_package(Path(args.package), keys)
    print(f"ok: {manifest.id} {manifest.version} ({manifest.task}), signature and hashes verified")
    return 0


def cmd_audit_verify(args: argparse.Namespace, settings: Settings) -> int:
    from appliance.audit.db import open_database
    from appliance.audit.log import verify_database

    problems = verify_database(open_database(settings.db_path))
    for problem in problems:
        print(f"seq {problem.seq}: {problem.problem}")
    if problems:
        return 1
    print("audit log intact")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="appliance", description="DICOM triage appliance")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run every component").set_defaults(func=cmd_serve)
    sub.add_parser("listener", help="run the DICOM listener").set_defaults(func=cmd_listener)
    status = sub.add_parser("status", help="counts and series states")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)

    config = sub.add_parser("config", help="check or print the settings").add_subparsers(
        dest="action", required=True
    )
    validate = config.add_parser("validate", help="check a settings file; names any bad key")
    validate.add_argument("path", nargs="?", help="TOML file (default: the active one)")
    validate.set_defaults(func=cmd_config_validate, needs_settings=False)
    config.add_parser("show", help="print the effective settings").set_defaults(func=cmd_config_show)

    models = sub.add_parser("models", help="model packages").add_subparsers(dest="action", required=True)
    verify = models.add_parser("verify", help="check a package's signature, hashes and manifest")
    verify.add_argument("package")
    verify.add_argument("--trusted-key", action="append", default=[], help="public key (PEM)")
    verify.set_defaults(func=cmd_models_verify)

    audit = sub.add_parser("audit", help="the audit log").add_subparsers(dest="action", required=True)
    audit.add_parser("verify", help="check the hash chain").set_defaults(func=cmd_audit_verify)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if not getattr(args, "needs_settings", True):
            return args.func(args)
        settings = load_settings()
        _configure_logging(settings.log_level)
        return args.func(args, settings)
    except ApplianceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
