"""Benchmark a committed revision of memfts instead of the working tree.

Several people edit ``src/`` at once, so a long run on the working tree may time code that
changes under it (or fails half-way). ``--rev REV`` exports that commit's ``src/`` and ``sql/``
into ``bench/data/rev-<sha>/`` with ``git archive`` and re-runs the script with it first on
``PYTHONPATH``; server subprocesses inherit the variable (``protocol.memfts_command``).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

from corpus import DATA_DIR

REPO = Path(__file__).resolve().parents[1]
_MARKER = "MEMFTS_BENCH_REV"


def use_revision(rev: str | None) -> str:
    """Re-exec on ``rev``'s code (once); return a label of the code being measured."""
    if os.environ.get(_MARKER):
        return os.environ[_MARKER]
    if rev is None:
        return "working tree"
    sha = subprocess.run(
        ["git", "rev-parse", "--verify", f"{rev}^{{commit}}"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    dest = DATA_DIR / f"rev-{sha[:10]}"
    if not dest.exists():
        archive = subprocess.run(
            ["git", "archive", "--format=tar", sha, "src", "sql"],
            cwd=REPO,
            check=True,
            capture_output=True,
        ).stdout
        tmp = dest.with_suffix(".tmp")
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        tmp.rename(dest)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(dest / "src"), env.get("PYTHONPATH")]))
    env[_MARKER] = f"commit {sha[:10]}"
    os.execve(sys.executable, [sys.executable, *sys.argv], env)
