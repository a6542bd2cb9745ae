"""The code of a git ref beside this tree's, for a benchmark's ``--baseline-ref`` run.

Example:
    >>> with baseline_tree(REPO, None, Path("/tmp")) as tree:  # doctest: +SKIP
    ...     tree is None
    True
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def baseline_tree(repo: Path, ref: str | None, tmp: Path) -> Iterator[Path | None]:
    """A ``git worktree add --detach`` of ``ref`` under ``tmp``, removed on leaving;
    ``None`` when no ref is asked for."""
    if ref is None:
        yield None
        return
    tree = tmp / "baseline"
    done = subprocess.run(
        ["git", "-C", str(repo), "worktree", "add", "--detach", str(tree), ref],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"git worktree add {ref} failed: {done.stderr.strip()}")
    try:
        yield tree
    finally:
        subprocess.run(
            ["git", "-C", str(repo), "worktree", "remove", "--force", str(tree)],
            capture_output=True,
        )
