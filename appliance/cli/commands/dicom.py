"""``dicom peers|destinations list|add|remove``: as on the DICOM admin page (checked, kept
beside the data, audited, applied at the next start)."""

from __future__ import annotations

import argparse

from appliance.cli.commands.common import actor, print_table
from appliance.parts import Parts

FORMS = {"peers": "AE@address", "destinations": "AE@host:port"}
NONE_LISTED = {
    "peers": "no peers listed: only open mode ([dicom] open_mode) lets anyone send",
    "destinations": "no destinations: results stay on the appliance",
}
ORIGINS = {
    "configuration": "from the configuration file or the environment",
    "added here": "added on this appliance",
    "removed here": "removed on this appliance: not used",
}


def register(sub: argparse._SubParsersAction) -> None:
    dicom = sub.add_parser("dicom", help="peers and destinations, kept beside the data").add_subparsers(
        dest="kind", required=True
    )
    for kind, form in FORMS.items():
        actions = dicom.add_parser(
            kind, help=f"list, add or remove {kind} ({form}); changes apply at the next start"
        ).add_subparsers(dest="action", required=True)
        actions.add_parser("list", help=f"the {kind} the next start uses, and where each comes from").set_defaults(
            func=list_endpoints
        )
        for action in ("add", "remove"):
            one = actions.add_parser(action, help=f"{action} one ({form}; audited; undoes an earlier opposite change)")
            one.add_argument("entry", metavar=form)
            one.set_defaults(func=change_endpoint)


def list_endpoints(args: argparse.Namespace, parts: Parts) -> int:
    from appliance.config import local_dicom_path
    from appliance.web.dicom_endpoints import listing

    rows = listing(parts.settings, args.kind)
    if not rows:
        print(NONE_LISTED[args.kind])
        return 0
    print_table((FORMS[args.kind], "where it comes from"), [(entry, ORIGINS[origin]) for entry, origin in rows])
    if any(origin != "configuration" for _, origin in rows):
        print(
            f"\nchanges made on this appliance are kept in {local_dicom_path(parts.settings.data_dir)}; "
            "the listener and the sender use them after the appliance service restarts"
        )
    return 0


def change_endpoint(args: argparse.Namespace, parts: Parts) -> int:
    from appliance.web.dicom_endpoints import change

    entry = change(parts.database().conn, parts.settings, args.kind, args.action, args.entry, actor())
    done, then = ("added", "use it") if args.action == "add" else ("removed", "stop using it")
    print(f"{args.kind}: {entry} {done}; the listener and the sender {then} after the appliance service restarts")
    return 0
