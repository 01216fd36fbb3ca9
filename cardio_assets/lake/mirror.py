"""A local working copy of a data lake that lives on object storage.

Steps work on local files: frames are memory-mapped, checkpoints and weights are written by
torch and safetensors, figures by matplotlib. So a lake on object storage (`data_lake` an
`s3://`, `gs://` or `az://` URL) is worked on through a local copy (`lake_cache`), and:

- every write the pipeline makes under the copy goes through `lake.atomic`, which tells this
  module when a file or folder is complete; it is then published to the store under the same
  relative key (`lake.object_store` says what each backend guarantees);
- a step that reads what another machine wrote calls `fetched(path)` first: the published copy
  of that file or folder (or of everything under a prefix) replaces the local one where the
  store holds a different version. The IO manager does so for every asset value it loads.

Which version each local file or folder came from is kept under `<copy>/.lake-versions/`, so a
fetch downloads only what changed. Deletions are not mirrored: the store keeps what a step
removed locally (a stale phantom patient, an old checkpoint's leftovers) until removed there.
A lake given as a local folder attaches nothing and every function here returns at once.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from cardio_assets.lake.atomic import after_write, swap_in, temporary_sibling
from cardio_assets.lake.object_store import CURRENT, VERSIONS, ObjectStore

VERSION_MARKS = ".lake-versions"

_ATTACHED: dict[Path, ObjectStore] = {}
_SPECS: dict[Path, tuple[str, dict]] = {}


def attach(local_root: str | Path, url: str, storage_options: dict | None = None) -> ObjectStore:
    """Mirror everything written under `local_root` to the lake at `url` (idempotent)."""
    root = Path(local_root).resolve()
    if root not in _ATTACHED or _SPECS[root] != (url, storage_options or {}):
        _ATTACHED[root] = ObjectStore(url, storage_options)
        _SPECS[root] = (url, dict(storage_options or {}))
    after_write(published)
    return _ATTACHED[root]


def detach(local_root: str | Path) -> None:
    root = Path(local_root).resolve()
    _ATTACHED.pop(root, None)
    _SPECS.pop(root, None)


def attachments() -> list[tuple[str, str, dict]]:
    """What is attached, for processes this one spawns (`attach_all` there)."""
    return [(str(root), url, options) for root, (url, options) in _SPECS.items()]


def attach_all(items: list[tuple[str, str, dict]]) -> None:
    for root, url, options in items:
        attach(root, url, options)


def _locate(path: Path) -> tuple[Path, ObjectStore, str] | None:
    if not _ATTACHED:
        return None
    path = Path(path).resolve()
    for root, store in _ATTACHED.items():
        if path == root or root not in path.parents:
            continue
        parts = path.relative_to(root).parts
        # inside a temporary folder (published with its folder) or the version marks: not an output
        if parts[0] == VERSION_MARKS or any(p.startswith(".") and (".tmp-" in p or ".old-" in p) for p in parts):
            return None
        return root, store, "/".join(parts)
    return None


def _mark(root: Path, key: str) -> Path:
    return root / VERSION_MARKS / f"{key}.version"


def _read_mark(root: Path, key: str) -> str | None:
    mark = _mark(root, key)
    return mark.read_text() if mark.is_file() else None


def _write_mark(root: Path, key: str, version: str) -> None:
    mark = _mark(root, key)
    mark.parent.mkdir(parents=True, exist_ok=True)
    mark.write_text(version)


def published(path: str | Path) -> None:
    """Upload a file or folder just written under an attached copy (called by `lake.atomic`)."""
    found = _locate(Path(path))
    if found is None:
        return
    root, store, key = found
    path = Path(path)
    version = store.publish_dir(path, key) if path.is_dir() else store.publish_file(path, key)
    _write_mark(root, key, version)


def fetched(path: str | Path) -> Path:
    """`path`, after bringing in what the lake holds there if it differs from the local copy.

    A published folder or file is replaced whole; a prefix (a folder whose parts were published
    one by one, as `models/controlnet`) is fetched part by part. Where the lake holds nothing,
    the local copy is left as it is. Paths outside an attached copy are returned untouched.
    """
    path = Path(path)
    found = _locate(path)
    if found is None:
        return path
    root, store, key = found
    kind = store.kind(key)
    if kind == "prefix":
        for child in store.children(key):
            name = child.rsplit("/", 1)[-1]
            if name not in (CURRENT, VERSIONS):
                fetched(path / name)
    elif kind in ("dir", "file"):
        _fetch_whole(root, store, key, path, kind)
    return path


def _fetch_whole(root: Path, store: ObjectStore, key: str, path: Path, kind: str) -> None:
    remote = store.current_version(key) if kind == "dir" else store.file_version(key)
    if path.exists() and _read_mark(root, key) == remote:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        if kind == "dir":
            tmp.mkdir()
            version = store.fetch_dir(key, tmp)
        else:
            version = store.fetch_file(key, tmp)
        swap_in(tmp, path)  # not through atomic_dir: a fetched copy is not published back
        _write_mark(root, key, version)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
