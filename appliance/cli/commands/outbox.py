"""``outbox list|retry|discard``: result objects waiting for, or given up by, destinations."""

from __future__ import annotations

import argparse
import sys

from appliance.cli.commands.common import actor
from appliance.parts import Parts


def register(sub: argparse._SubParsersAction) -> None:
    outbox = sub.add_parser("outbox", help="result objects waiting for or given up by destinations").add_subparsers(
        dest="action", required=True
    )
    listing = outbox.add_parser("list", help="rows, oldest first")
    listing.add_argument("--dead", action="store_true", help="dead letters only")
    listing.add_argument("--destination", help="one destination, AE@host:port")
    listing.set_defaults(func=list_items)
    for action, text in (
        ("retry", "queue a dead letter again, due now, with a fresh try count (audited)"),
        ("discard", "give up on a dead letter for good (audited)"),
    ):
        change = outbox.add_parser(action, help=text)
        change.add_argument("id", type=int, help="the outbox id (appliance outbox list --dead)")
        change.set_defaults(func=change_dead_letter)


def list_items(args: argparse.Namespace, parts: Parts) -> int:
    from appliance.send.outbox import Outbox
    from appliance.states import OutboxState

    items = Outbox(parts.database()).items(args.destination, OutboxState.DEAD if args.dead else None)
    if not items:
        what = "no dead letters" if args.dead else "no result objects queued, sent or given up"
        print(what + (f" for {args.destination}" if args.destination else ""))
    for item in items:
        status = f"0x{item.last_status:04X}" if item.last_status is not None else "-"
        print(
            f"{item.id:>8} {item.state:<8} {item.destination:<32} tries {item.attempts:>3} {status:<7}"
            f" {item.last_error or ''}"
        )
    return 0


def change_dead_letter(args: argparse.Namespace, parts: Parts) -> int:
    """Retry or discard one dead letter (audited, as on the admin page)."""
    from appliance.send.outbox import Outbox

    outbox = Outbox(parts.database())
    done = outbox.retry(args.id, actor()) if args.action == "retry" else outbox.discard(args.id, actor())
    if not done:
        print(f"error: outbox {args.id} is not a dead letter", file=sys.stderr)
        return 2  # as every refusal (appliance.cli.main)
    print(f"outbox {args.id}: {'queued again' if args.action == 'retry' else 'discarded'}")
    return 0
