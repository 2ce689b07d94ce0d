"""``report compliance``: the compliance report of a period."""

from __future__ import annotations

import argparse
from datetime import date

from appliance.parts import Parts


def register(sub: argparse._SubParsersAction) -> None:
    report = sub.add_parser("report", help="reports for people outside the box").add_subparsers(
        dest="report", required=True
    )
    compliance = report.add_parser(
        "compliance",
        help="a period's studies, decisions, deliveries, models in service, alerts, sign-ins and audit verification",
    )
    compliance.add_argument("--from", dest="start", type=_day, required=True, help="first day, YYYY-MM-DD (UTC)")
    compliance.add_argument("--to", dest="end", type=_day, required=True, help="last day, included, YYYY-MM-DD (UTC)")
    compliance.add_argument(
        "--format", choices=("text", "json", "html"), default="text", help="html: one printable, self-contained page"
    )
    compliance.set_defaults(func=compliance_command)


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day as YYYY-MM-DD") from None


def compliance_command(args: argparse.Namespace, parts: Parts) -> int:
    from appliance.compliance import as_html, as_text, compliance_report
    from appliance.errors import ConfigError

    if args.end < args.start:
        raise ConfigError(f"--to {args.end} is before --from {args.start}")
    report = compliance_report(parts.database(), args.start, args.end)
    shown = {"json": report.as_json, "html": lambda: as_html(report), "text": lambda: as_text(report)}[args.format]()
    print(shown, end="" if args.format == "text" else "\n")
    return 0 if report.audit["chain_verified"] else 1
