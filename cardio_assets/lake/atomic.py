"""Atomic writes: a killed run leaves the previous good file or folder in place.

Everything the pipeline writes (asset values, models, checkpoints, reports) goes through
these two: a temporary sibling is written in full, then renamed over the target. On a local
or POSIX file system the rename of a file is atomic; a folder is swapped in two renames
(old aside, new in), so a reader sees the old folder, the new one, or briefly neither.

Once a write is in place, each function registered with `after_write` is told its path: that is
how a lake kept on object storage publishes every output (`lake.mirror`).
"""

from __future__ import annotations

import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

_AFTER_WRITE: list[Callable[[Path], None]] = []


def after_write(callback: Callable[[Path], None]) -> None:
    """Call `callback(path)` after every completed write of a file or folder (once per callback)."""
    if callback not in _AFTER_WRITE:
        _AFTER_WRITE.append(callback)


def _written(path: Path) -> None:
    for callback in _AFTER_WRITE:
        callback(path)


def temporary_sibling(target: Path) -> Path:
    """A fresh name beside `target` that `recover` and `remove_leftovers` know as a temporary."""
    return target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}{target.suffix}"


def swap_in(tmp: Path, target: Path) -> None:
    """Replace `target` (file or folder, present or not) by `tmp` with renames."""
    old = None
    if target.exists() and target.is_dir():
        old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_dir(target: Path):
    """Yield a temporary folder; on success it replaces `target` in one rename."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(target)
    tmp.mkdir()
    try:
        yield tmp
        swap_in(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    _written(target)


def atomic_write_file(path: Path, write) -> Path:
    """`write(tmp)` a temporary sibling, then rename it over `path`; returns the path.

    The sibling is opened like any new file (mode from the umask), unlike `tempfile.mkstemp`'s
    0600, so the result has the permissions of every other output.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _written(path)
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    """Write a text file through a temporary sibling and a rename; returns the path."""
    return atomic_write_file(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def recover(target: Path) -> Path | None:
    """Undo what a killed write left around `target`: put back a folder set aside by an interrupted
    swap (`target` gone, `.name.old*` there), and drop half-written temporaries (`.name.tmp-*`).
    Returns `target` if it exists afterwards."""
    target = Path(target)
    aside = sorted(target.parent.glob(f".{target.name}.old*"))
    if not target.exists() and aside:
        os.replace(aside.pop(), target)
    for path in [*aside, *target.parent.glob(f".{target.name}.tmp-*")]:
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    return target if target.exists() else None


def remove_leftovers(folder: Path) -> None:
    """Delete every temporary and set-aside copy these writers left anywhere under `folder`."""
    for path in [p for p in Path(folder).rglob(".*") if ".tmp-" in p.name or ".old" in p.name]:
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
