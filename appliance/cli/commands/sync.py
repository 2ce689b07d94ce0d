"""``sync``, ``sync enrol|status|queue``: the central hub."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from appliance.formats import count, duration
from appliance.parts import Parts

if TYPE_CHECKING:
    from appliance.sync.round import RoundResult


def register(sub: argparse._SubParsersAction) -> None:
    sync = sub.add_parser("sync", help="one round with the central hub (push reports, stage releases)")
    sync.add_argument("--json", action="store_true", help="the round's outcome as JSON")
    sync.set_defaults(func=round_)
    actions = sync.add_subparsers(dest="sync_action")
    enrol = actions.add_parser("enrol", help="once: make the device key, spend a one-time token at the hub")
    enrol.add_argument("--hub", required=True, help="the hub's base URL, e.g. https://hub.example:8443")
    enrol.add_argument("--token", required=True, help="from `python -m training.hub token`")
    enrol.set_defaults(func=enrol_device)
    shown = actions.add_parser("status", help="enrolment, queued reports, last round, metadata age")
    shown.add_argument("--json", action="store_true", help="as JSON (what `appliance status --json` carries)")
    shown.set_defaults(func=show_status)
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
    print(json.dumps(asdict(result), indent=2) if args.json else "\n".join(round_words(result)))
    return 0 if not (result.push_error or result.release_error or result.checkin_error) else 1


def show_status(args: argparse.Namespace, parts: Parts) -> int:
    from appliance.sync.round import status

    shown = status(parts.settings)
    print(json.dumps(shown, indent=2) if args.json else "\n".join(status_words(shown)))
    return 0


def round_words(result: RoundResult) -> list[str]:
    """One round's outcome for a person (pure)."""
    pushed = f"pushed {count(result.pushed, 'report')}"
    if result.rejected:
        pushed += f" ({result.rejected} refused by the hub)"
    lines = [
        f"reports: {pushed}; {result.queued} newly queued" + (f"; {result.push_error}" if result.push_error else "")
    ]
    lines.append("release metadata: " + ("refreshed" if result.metadata_refreshed else "NOT refreshed"))
    if result.release_error:
        lines.append(f"releases: {result.release_error}")
    lines.append("staged in shadow: " + (", ".join(result.staged) or "nothing new"))
    lines.append("check-in: " + (f"FAILED: {result.checkin_error}" if result.checkin_error else "the hub has it"))
    if result.audit is not None:
        lines.append("audit chain at the hub: " + ("consistent" if result.audit == "consistent" else result.audit))
    lines += [f"withdrawn by the hub: {label}" for label in result.withdrawn]
    return lines


def status_words(shown: dict) -> list[str]:
    """``appliance sync status`` for a person (pure)."""
    enrolment = shown["enrolment"]
    if enrolment is None:
        return ["not enrolled: appliance sync enrol --hub URL --token TOKEN (the token from the hub's operator)"]
    reports = shown["reports"]
    lines = [
        f"enrolled as device {enrolment['device_id']} (ring {enrolment['ring']}) at {enrolment['hub_url']}",
        f"reports: {reports['pending']} waiting, {reports['delivered']} delivered, {reports['rejected']} refused",
    ]
    lines += [f"  refused {r['report_id']}: {r['reason']}" for r in reports["recent_rejections"]]
    last = shown["last_round"]
    if last is None:
        lines.append("last round: none yet")
    else:
        problems = [p for p in (last["push_error"], last["release_error"]) if p]
        lines.append(
            f"last round: finished {last['finished_at']}, pushed {count(last['pushed'], 'report')}, metadata "
            + ("refreshed" if last["metadata_refreshed"] else "NOT refreshed")
            + "".join(f"; {p}" for p in problems)
        )
    metadata = shown["metadata"]
    if metadata["last_refreshed_at"] is None:
        lines.append("release metadata: never refreshed")
    else:
        expiry = f"; the timestamp expires {metadata['expires']}" if metadata["expires"] else ""
        if metadata["expired"]:
            expiry = f"; EXPIRED {metadata['expires']}: no release is taken until a round refreshes it"
        lines.append(
            f"release metadata: refreshed {metadata['last_refreshed_at']} ({duration(metadata['age_s'])} ago){expiry}"
        )
    lines += [
        f"release {r['model_id']} {r['version']}: {r['state']}" + (f" ({r['reason']})" if r["reason"] else "")
        for r in shown["releases"]
    ]
    lines += [w["says"] for w in shown["withdrawn"]]
    return lines


def queue_reports(args: argparse.Namespace, parts: Parts) -> int:
    from appliance.sync.report_queue import enqueue_report

    conn = parts.database().conn
    queued = sum(enqueue_report(conn, json.loads(Path(p).read_text())) for p in args.report)
    print(f"queued {count(queued, 'report')} for the hub")
    return 0
