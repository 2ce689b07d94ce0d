"""``dicom peers|destinations add|remove``: as on the DICOM admin page (checked, kept
beside the data, audited, applied at the next start)."""

from __future__ import annotations

import argparse

from appliance.cli.commands.common import actor
from appliance.parts import Parts


def register(sub: argparse._SubParsersAction) -> None:
    dicom = sub.add_parser("dicom", help="peers and destinations, kept beside the data").add_subparsers(
        dest="kind", required=True
    )
    for kind, form in (("peers", "AE@address"), ("destinations", "AE@host:port")):
        actions = dicom.add_parser(
            kind, help=f"add or remove {kind} ({form}); applied at the next start"
        ).add_subparsers(dest="action", required=True)
        for action in ("add", "remove"):
            one = actions.add_parser(action, help=f"{action} one ({form}; audited)")
            one.add_argument("entry", metavar=form)
            one.set_defaults(func=change_endpoint)


def change_endpoint(args: argparse.Namespace, parts: Parts) -> int:
    from appliance.web.dicom_endpoints import change

    entry = change(parts.database().conn, parts.settings, args.kind, args.action, args.entry, actor())
    print(
        f"{args.kind}: {entry} {'added' if args.action == 'add' else 'removed'}; "
        "the listener and the sender use it after the appliance service restarts"
    )
    return 0
