"""One data lake on object storage (s3://, gs://, az://, any fsspec URL), published and fetched.

What each write guarantees, and how:

- A file is one object, uploaded in one PUT (or a multipart upload, which S3, GCS and Azure make
  visible only when it completes): a reader sees the previous object or the new one, never a
  part. (Local POSIX folders give the same through a rename.)
- A folder cannot be replaced in one step: object stores have no rename, and copying keys one by
  one is visible half-done. So a folder is published as a new version, `<key>/.v/<version>/...`,
  uploaded in full, and only then made current by overwriting one small object,
  `<key>/.current`, that names it. A reader reads `.current` first and then that version, so it
  sees the previous folder or the new one whole; a publish killed mid-upload leaves `.current`
  on the previous version, and the orphaned upload is removed by the next publish. After the
  switch, versions older than the writer's own are deleted, except the current one (two writers
  of one key at once, such as two partitions building the same index, each keep the other's);
  a reader that read `.current` just before may then find its version gone and must read
  `.current` again (`fetch_dir` does).

fsspec gives one interface to every backend (s3fs, gcsfs, adlfs): install the one for yours.
"""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path

import fsspec

CURRENT = ".current"
VERSIONS = ".v"


class ObjectStore:
    """The lake's root on object storage; keys are '/'-separated paths relative to it."""

    def __init__(self, url: str, storage_options: dict | None = None):
        self.url = url.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url, **(storage_options or {}))
        self.root = self.root.rstrip("/")

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}" if key else self.root

    # -- writing

    def publish_file(self, local: Path, key: str) -> str:
        """Upload one file as one object; returns its version (the store's checksum of it)."""
        self.fs.put_file(str(local), self._path(key))
        return self.file_version(key)

    def publish_dir(self, local: Path, key: str) -> str:
        """Upload a folder as a new version and make it current; returns the version."""
        version = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"  # sorts by time, unique across writers
        target = self._path(f"{key}/{VERSIONS}/{version}")
        files = [p for p in Path(local).rglob("*") if p.is_file()]
        for path in files:
            self.fs.put_file(str(path), f"{target}/{path.relative_to(local).as_posix()}")
        if not files:  # an empty folder is still a version: mark it, object stores keep no empty prefixes
            self.fs.pipe_file(f"{target}/{CURRENT}", b"")
        self.fs.pipe_file(self._path(f"{key}/{CURRENT}"), version.encode())
        self._drop_older_versions(key, version)
        return version

    def _drop_older_versions(self, key: str, mine: str) -> None:
        """Delete the versions older than `mine` but the current one (another writer's, maybe)."""
        current = self.current_version(key)
        prefix = self._path(f"{key}/{VERSIONS}")
        self.fs.invalidate_cache(prefix)
        for entry in self.fs.ls(prefix, detail=False) if self.fs.exists(prefix) else []:
            name = entry.rstrip("/").rsplit("/", 1)[-1]
            if name < mine and name != current:
                self.fs.rm(entry, recursive=True)
        self.fs.invalidate_cache()

    # -- reading

    def current_version(self, key: str) -> str | None:
        """The current version of a published folder, None if `key` is not one."""
        try:
            return self.fs.cat_file(self._path(f"{key}/{CURRENT}")).decode().strip()
        except FileNotFoundError:
            return None

    def file_version(self, key: str) -> str:
        return str(self.fs.checksum(self._path(key)))

    def kind(self, key: str) -> str | None:
        """"dir" for a published folder, "file" for an object, "prefix" for a folder of those, None if absent."""
        if self.current_version(key) is not None:
            return "dir"
        path = self._path(key)
        self.fs.invalidate_cache(path)
        if self.fs.isfile(path):
            return "file"
        return "prefix" if self.fs.isdir(path) else None

    def children(self, key: str) -> list[str]:
        """Keys one level below a prefix."""
        self.fs.invalidate_cache(self._path(key))
        return [f"{key}/{p.rstrip('/').rsplit('/', 1)[-1]}" for p in self.fs.ls(self._path(key), detail=False)]

    def fetch_file(self, key: str, local: Path) -> str:
        """Download one object to `local` (a path the caller then renames into place); returns its version."""
        version = self.file_version(key)
        self.fs.get_file(self._path(key), str(local))
        return version

    def fetch_dir(self, key: str, local: Path, attempts: int = 3) -> str:
        """Download the current version of a published folder into the empty folder `local`."""
        for _ in range(attempts):
            version = self.current_version(key)
            if version is None:
                raise FileNotFoundError(f"{self.url}/{key} is not a published folder")
            source = self._path(f"{key}/{VERSIONS}/{version}")
            try:
                paths = self.fs.find(source)
                if not paths:  # never so for a current version (an empty one holds a marker): it was just replaced
                    raise FileNotFoundError(source)
                for path in paths:
                    rel = path[len(source) + 1:]
                    if rel == CURRENT:
                        continue
                    (local / rel).parent.mkdir(parents=True, exist_ok=True)
                    self.fs.get_file(path, str(local / rel))
                return version
            except FileNotFoundError:  # replaced while we read it: read the new current version
                self.fs.invalidate_cache()
                shutil.rmtree(local)
                local.mkdir()
        raise RuntimeError(f"{self.url}/{key} changed during each of {attempts} reads")
