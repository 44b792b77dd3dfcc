"""What a run was made from: host, git commit, model and dataset names and versions."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any


def _find_git_dir(start: Path) -> Path | None:
    for directory in (start, *start.parents):
        candidate = directory / ".git"
        if candidate.is_dir():
            return candidate
        if candidate.is_file():  # a worktree or submodule: "gitdir: PATH"
            text = candidate.read_text(encoding="utf-8", errors="replace").strip()
            if text.startswith("gitdir:"):
                return (directory / text.split(":", 1)[1].strip()).resolve()
    return None


def git_commit(start: str | Path | None = None) -> str | None:
    """The commit checked out at or above ``start`` (the working directory by default).

    Reads ``.git`` directly instead of running ``git``: no subprocess on a training node.
    """
    try:
        git_dir = _find_git_dir(Path(start or os.getcwd()).resolve())
        if git_dir is None:
            return None
        head = (git_dir / "HEAD").read_text(encoding="utf-8").strip()
        if not head.startswith("ref:"):
            return head or None
        ref = head.split(":", 1)[1].strip()
        common = git_dir
        commondir = git_dir / "commondir"
        if commondir.is_file():
            common = (git_dir / commondir.read_text(encoding="utf-8").strip()).resolve()
        for base in (git_dir, common):
            ref_file = base / ref
            if ref_file.is_file():
                return ref_file.read_text(encoding="utf-8").strip() or None
        packed = common / "packed-refs"
        if packed.is_file():
            for line in packed.read_text(encoding="utf-8").splitlines():
                parts = line.split()
                if len(parts) == 2 and parts[1] == ref:
                    return parts[0]
    except OSError:
        return None
    return None


def split_name_version(value: Any, version: str | None) -> tuple[str | None, str | None]:
    """Accept ``"name"``, ``("name", "version")`` or ``{"name": ..., "version": ...}``."""
    if value is None:
        return None, version
    if isinstance(value, dict):
        name = value.get("name")
        return (None if name is None else str(name)), str(
            value.get("version") or version or ""
        ) or None
    if isinstance(value, (tuple, list)) and len(value) == 2:
        pair_version = value[1] if value[1] is not None else version
        return str(value[0]), None if pair_version is None else str(pair_version)
    return str(value), version


def host_facts() -> dict[str, Any]:
    # imported here, once per run: together about 15 ms of ``import mlobs`` otherwise
    import platform
    import socket

    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "python": platform.python_version(),
        "argv0": Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "",
    }
