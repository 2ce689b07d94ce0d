"""``sync``, ``sync enrol|status|queue``: the central hub."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from appliance.parts import Parts


def register(sub: argparse._SubParsersAction) -> None:
    sync = sub.add_parser("sync", help="one round with the central hub (push reports, stage releases)")
    sync.set_defaults(func=round_)
    actions = sync.add_subparsers(dest="sync_action")
    enrol = actions.add_parser("enrol", help="once: make the device key, spend a one-time token at the hub")
    enrol.add_argument("--hub", required=True, help="the hub's base URL, e.g. https://hub.example:8443")
    enrol.add_argument("--token", required=True, help="from `python -m training.hub token`")
    enrol.set_defaults(func=enrol_device)
    actions.add_parser("status", help="enrolment, queued reports, last round, metadata age").set_defaults(
        func=show_status
    )
    queue = actions.add_parser("queue", help="queue anonymised report JSON files for the hub")
    queue.add_argument("report", nargs="+")
    queue.set_defaults(func=queue_reports)


def enrol_device(args: argparse.Namespace, parts: Parts) -> int:
    from appliance.sync.round import enrol

    enrolment = enrol(parts.settings, args.hub, args.token)
    print(f"enrolled as device {enrolment.device_id} (ring {enrolment.ring}) at {enrolment.hub_url}")
    return 0


def round_(args: argparse.Namespace, parts: Parts) -> int:
    from appliance.sync.round import run_round

    result = run_round(parts.settings, parts.registry())
    print(json.dumps(asdict(result), indent=2))
    return 0 if not (result.push_error or result.release_error or result.checkin_error) else 1


def show_status(args: argparse.Namespace, parts: Parts) -> int:
    from appliance.sync.round import status

    print(json.dumps(status(parts.settings), indent=2))
    return 0


def queue_reports(args: argparse.Namespace, parts: Parts) -> int:
    from appliance.formats import count
    from appliance.sync.report_queue import enqueue_report

    conn = parts.database().conn
    queued = sum(enqueue_report(conn, json.loads(Path(p).read_text())) for p in args.report)
    print(f"queued {count(queued, 'report')} for the hub")
    return 0
