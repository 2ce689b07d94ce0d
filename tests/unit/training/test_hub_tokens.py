"""The hub's tokens are typed or pasted into a command line (``appliance sync enrol
--token T``): hex, so one can never start with "-", which argparse reads as an option
(a URL-safe base64 token did, about one in 64, and enrolment failed with a usage error)."""

from __future__ import annotations

import re

from training.hub.service import create_operator_token, create_token
from training.hub.store import HubDatabase


def test_tokens_are_48_hex_digits(tmp_path):
    db = HubDatabase(str(tmp_path / "hub.db"))
    tokens = [create_token(db, "Site A", "all", 3600, 0.0) for _ in range(64)]
    tokens += [create_operator_token(db, "ops", 0.0) for _ in range(64)]
    assert all(re.fullmatch(r"[0-9a-f]{48}", token) for token in tokens)
    assert len(set(tokens)) == len(tokens)
