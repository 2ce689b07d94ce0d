"""The ``appliance`` command: parses, asks the composition root for the parts, runs them.

Each command group lives in its own module under :mod:`appliance.cli.commands` (as pip
keeps its commands), which adds its parsers with ``register`` and runs with
``(args, parts)``. No command holds logic of its own: it calls the functions the pages
and the services use.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from appliance import __version__
from appliance.cli.commands import COMMANDS
from appliance.config import load_settings
from appliance.errors import ApplianceError
from appliance.parts import Parts


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="appliance", description="DICOM triage appliance")
    parser.add_argument("--version", action="version", version=f"appliance {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    return parser


#: Bits every file and folder the appliance makes keeps closed, whatever umask the shell
#: that started it had: files 0640 at most, folders 0750 (the units' UMask=0077 is stricter).
CLOSED_BITS = 0o027


def main(argv: list[str] | None = None) -> int:
    os.umask(os.umask(CLOSED_BITS) | CLOSED_BITS)  # tighten, never loosen
    args = build_parser().parse_args(argv)
    try:
        if not getattr(args, "needs_settings", True):
            code = args.func(args)
        else:
            settings = load_settings()
            _configure_logging(settings.log_level)
            code = args.func(args, Parts(settings))
        sys.stdout.flush()  # here, not at exit, where a reader that has gone is "Exception ignored"
        return code
    except ApplianceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader (``| head``) has gone: stop quietly, as other commands do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush cannot fail again
        return 141


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # pynetdicom's INFO/DEBUG output echoes request identifiers; keep it to problems.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request
    logging.getLogger("highdicom").setLevel(logging.WARNING)  # a dozen INFO lines per result object
