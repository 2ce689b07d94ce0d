"""Named crash points for the kill -9 tests (tests/system/test_crash_points.py, issue 24).

:func:`hit` is called at the places where a crash is most revealing (a file in the spool
but no C-STORE answer, an object at the PACS but its outbox row still pending, a hub
answer not yet recorded, a model's files in place but no registry row). It is inert
unless the environment variable ``APPLIANCE_FAILPOINT`` names that point: then the
process sends itself SIGKILL there, as a power cut or the OOM killer would. It is not a
setting (:mod:`appliance.config` only lets the variable through) and nothing in a
deployment sets it.
"""

from __future__ import annotations

import os
import signal

#: The environment variable naming the one crash point armed in this process.
VARIABLE = "APPLIANCE_FAILPOINT"


def hit(name: str) -> None:
    """SIGKILL this process if ``APPLIANCE_FAILPOINT`` is ``name``; otherwise return at once."""
    if os.environ.get(VARIABLE) == name:
        os.kill(os.getpid(), signal.SIGKILL)
