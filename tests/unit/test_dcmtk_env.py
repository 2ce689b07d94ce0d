"""dcmtk tools are found as dcmtk's, not as pynetdicom's apps of the same names."""

from __future__ import annotations

import os
import shutil
import sys

from scripts.harness import tcp_env


def test_dcmtk_tools_are_looked_up_past_the_virtual_environments_own_apps():
    """pynetdicom installs ``echoscu`` and ``storescu`` into the interpreter's ``bin``;
    with the environment activated they shadowed dcmtk's, which take other options
    (``-to``, ``+sd``), and a C-ECHO test failed on usage."""
    own = os.path.join(sys.prefix, "bin")
    env = tcp_env({"PATH": os.pathsep.join([own, "/usr/bin", "/bin"]), "HOME": "/root"})
    assert env["TCP_NODELAY"] == "1" and env["HOME"] == "/root"
    assert env["PATH"].split(os.pathsep) == ["/usr/bin", "/bin"]
    echoscu = shutil.which("echoscu", path=env["PATH"])
    assert echoscu is None or not echoscu.startswith(sys.prefix)
