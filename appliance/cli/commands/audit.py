"""``audit verify|export``: the hash-chained audit log."""

from __future__ import annotations

import argparse
import sys

from appliance.parts import Parts


def register(sub: argparse._SubParsersAction) -> None:
    audit = sub.add_parser("audit", help="the audit log").add_subparsers(dest="action", required=True)
    audit.add_parser("verify", help="check the hash chain").set_defaults(func=verify)
    export = audit.add_parser("export", help="write the audit log as CSV or JSON to stdout")
    export.add_argument("--format", choices=("csv", "json"), default="csv")
    export.add_argument("--kind", help="only rows of this kind, e.g. inference (an unknown kind lists the kinds)")
    export.set_defaults(func=export_log)


def verify(args: argparse.Namespace, parts: Parts) -> int:
    from appliance.audit.chain import verify_database

    problems = verify_database(parts.database())
    for problem in problems:
        print(f"seq {problem.seq}: {problem.problem}")
    if problems:
        return 1
    print("audit log intact")
    return 0


def export_log(args: argparse.Namespace, parts: Parts) -> int:
    from appliance.audit.export import export, kinds
    from appliance.formats import count

    db = parts.database()
    known = kinds(db)
    if args.kind is not None and args.kind not in known:
        print(
            f"error: no audit row has kind {args.kind!r}; kinds in the log: {', '.join(known) or 'none yet'}",
            file=sys.stderr,
        )
        return 2
    rows = export(db, sys.stdout, args.format, args.kind)
    print(f"exported {count(rows, 'row')}", file=sys.stderr)
    return 0
