"""``users add``, ``tokens create``: who may use the web pages and the API."""

from __future__ import annotations

import argparse
import sys

from appliance.cli.commands.common import actor
from appliance.parts import Parts


def register(sub: argparse._SubParsersAction) -> None:
    from appliance.web.accounts import ROLES

    users = sub.add_parser("users", help="web users").add_subparsers(dest="action", required=True)
    add = users.add_parser("add", help="add a user; the password is read from stdin (one line)")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=ROLES)
    add.set_defaults(func=add_user)
    tokens = sub.add_parser("tokens", help="API bearer tokens").add_subparsers(dest="action", required=True)
    create = tokens.add_parser("create", help="create a token; it is printed once, on the last line")
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--name", help="what the token is for (default: ROLE-token)")
    create.set_defaults(func=create_token)


def add_user(args: argparse.Namespace, parts: Parts) -> int:
    from appliance.web.accounts import add_user

    password = sys.stdin.readline().rstrip("\r\n")
    user = add_user(parts.database().conn, args.name, args.role, password, actor())
    print(f"added {user.role} {user.name}")
    return 0


def create_token(args: argparse.Namespace, parts: Parts) -> int:
    from appliance.web.accounts import create_token

    name = args.name or f"{args.role}-token"
    token = create_token(parts.database().conn, args.role, name, actor())
    print(f"token {name!r} for role {args.role}; it is shown once, only its hash is kept:")
    print(token)
    return 0
