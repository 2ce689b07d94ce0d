"""``status``: counts and the state of every series."""

from __future__ import annotations

import argparse
import json

from appliance.parts import Parts


def register(sub: argparse._SubParsersAction) -> None:
    status = sub.add_parser("status", help="counts and series states")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=show)


def show(args: argparse.Namespace, parts: Parts) -> int:
    from appliance.status import collect_status

    status = collect_status(parts.database(), parts.settings.data_dir)
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    print(f"instances received: {status['instances_received']}")
    for s in status["series"]:
        print(f"{s['state']:<12} {s['modality']:<4} {s['instances']:>6}  {s['series_instance_uid']}")
    return 0
