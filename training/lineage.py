"""What built a package: the code revision, and the rule that a release is built from committed code.

A package's lineage names the git commit of the code that built it. A release built from
a tree with uncommitted changes could not be rebuilt by anyone, so :func:`require_clean_tree`
refuses it; other builds (tests, experiments) record ``+dirty`` instead.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from training.errors import DirtyTreeError

REPOSITORY = Path(__file__).resolve().parents[1]

def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True,
                          timeout=60).stdout


def uncommitted(root: Path = REPOSITORY) -> list[str]:
    """Tracked files with uncommitted changes (``git status --porcelain`` lines)."""
    return [line for line in _git(root, "status", "--porcelain", "--untracked-files=no").splitlines() if line.strip()]


def code_revision(root: Path = REPOSITORY) -> str | None:
    """``git rev-parse HEAD`` of ``root`` (``+dirty`` with uncommitted changes to tracked
    files); ``None`` outside a git checkout."""
    try:
        head = _git(root, "rev-parse", "HEAD").strip()
        dirty = uncommitted(root)
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def require_clean_tree(root: Path = REPOSITORY) -> str:
    """The commit a release is built from; :class:`DirtyTreeError` naming the changed files
    when the tree has uncommitted changes, or when ``root`` is not a git checkout."""
    try:
        changed = uncommitted(root)
        head = _git(root, "rev-parse", "HEAD").strip()
    except (OSError, subprocess.SubprocessError) as exc:
        raise DirtyTreeError(f"{root} is not a git checkout, so a release's code revision cannot be named: {exc}") from exc
    if changed:
        files = ", ".join(line[3:] for line in changed[:10]) + (f" and {len(changed) - 10} more" if len(changed) > 10 else "")
        raise DirtyTreeError(f"refusing to build a release from uncommitted changes ({files}): commit them first, "
                             "so the package's lineage names code anyone can rebuild it from")
    return head
