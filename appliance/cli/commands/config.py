"""``config validate|show``: check or print the settings."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from appliance.config import load_settings, settings_as_dict
from appliance.parts import Parts


def register(sub: argparse._SubParsersAction) -> None:
    config = sub.add_parser("config", help="check or print the settings").add_subparsers(dest="action", required=True)
    validate = config.add_parser("validate", help="check a settings file; names any bad key")
    validate.add_argument("path", nargs="?", help="TOML file (default: the active one)")
    validate.set_defaults(func=validate_file, needs_settings=False)
    config.add_parser("show", help="print the effective settings").set_defaults(func=show)


def validate_file(args: argparse.Namespace) -> int:
    load_settings(Path(args.path) if args.path else None)
    print("configuration is valid")
    return 0


def show(args: argparse.Namespace, parts: Parts) -> int:
    print(json.dumps(settings_as_dict(parts.settings), indent=2))
    return 0
