"""The dataset folder: parquet shards under data/<config>/, manifest.json, README.md card.

Every write is atomic (temp file + rename in the same folder); the manifest is updated under a file
lock, so two builders writing different configs into one folder do not lose each other's entries.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Callable

from forelen import __version__, contracts
from forelen.errors import ForelenError
from forelen.schema import PARTITIONS, SCHEMA_VERSION

MANIFEST = "manifest.json"
CARD = "README.md"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, rename: readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_url(root) -> bool:
    """A filesystem URL (`s3://`, `gs://`, `file://`, ...) rather than a local path."""
    return "://" in str(root)


class DatasetFolder:
    """A dataset folder on a local path or at a filesystem URL handled by fsspec.

    A local folder is written with temp file + fsync + rename and its manifest is updated under a
    file lock. A URL folder (object stores, shared filesystems, and `file://` for tests) writes
    each file in one `pipe` call, which object stores make atomic (a reader sees the old object or
    the new one); on fsspec's local filesystem it still writes a temp file and renames it. Object
    stores have no file lock: one process (the build's driver) writes a URL folder's manifest,
    workers write only shards.
    """

    def __init__(self, root: str | Path):
        self.location = str(root)
        if is_url(root):
            import fsspec

            try:
                self.fs, path = fsspec.core.url_to_fs(self.location)
            except (ImportError, ValueError) as exc:
                raise ForelenError(f"cannot open dataset folder {self.location}: "
                                   f"{str(exc).splitlines()[0]}") from None
            self.root = path.rstrip("/")
        else:
            self.fs = None
            self.root = Path(root)

    def __repr__(self) -> str:
        return f"DatasetFolder({self.location!r})"

    # -- files (relative paths, `/`-separated) --------------------------------------------------
    def path(self, rel: str):
        return self.root / rel if self.fs is None else f"{self.root}/{rel}"

    def read_bytes(self, rel: str) -> bytes:
        return self.path(rel).read_bytes() if self.fs is None else self.fs.cat_file(self.path(rel))

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Atomic: readers see the old file or the new one, never part of one."""
        if self.fs is None:
            atomic_write_bytes(self.path(rel), data)
            return
        target = self.path(rel)
        self.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        if "file" in _protocols(self.fs):  # a local filesystem: temp file + rename
            tmp = target.rsplit("/", 1)[0] + f"/.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            try:
                self.fs.pipe_file(tmp, data)
                self.fs.mv(tmp, target)
            except BaseException:
                with contextlib.suppress(FileNotFoundError, OSError):
                    self.fs.rm_file(tmp)
                raise
        else:  # one object PUT is atomic on object stores
            self.fs.pipe_file(target, data)

    def exists(self, rel: str) -> bool:
        return self.path(rel).exists() if self.fs is None else self.fs.exists(self.path(rel))

    def sha256(self, rel: str) -> str | None:
        """sha256 of a file, None when it is missing."""
        if self.fs is None:
            path = self.path(rel)
            return sha256_file(path) if path.is_file() else None
        if not self.fs.isfile(self.path(rel)):
            return None
        h = hashlib.sha256()
        with self.fs.open(self.path(rel), "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()

    def config_files(self, config: str) -> list[str]:
        """Names of the files (shards, leftovers) under data/<config>/."""
        if self.fs is None:
            cdir = self.config_dir(config)
            return sorted(p.name for p in cdir.iterdir()) if cdir.is_dir() else []
        cdir = self.path(f"data/{config}")
        if not self.fs.isdir(cdir):
            return []
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(cdir, detail=False))

    def remove(self, config: str, name: str | None = None) -> None:
        """Remove one file of a config, or (name None) the config's whole data folder."""
        rel = f"data/{config}" + (f"/{name}" if name else "")
        if self.fs is None:
            path = self.path(rel)
            if name is None:
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        elif self.fs.exists(self.path(rel)):
            self.fs.rm(self.path(rel), recursive=name is None)

    # -- manifest ------------------------------------------------------------------------------
    def manifest(self) -> dict:
        where = f"{self.location.rstrip('/')}/{MANIFEST}"
        try:
            if not self.exists(MANIFEST):
                return {"format": "forelen-dataset", "schema_version": SCHEMA_VERSION,
                        "configs": {}}
            manifest = json.loads(self.read_bytes(MANIFEST))
        except (OSError, json.JSONDecodeError) as exc:
            raise ForelenError(f"cannot read {where}: {exc}") from None
        if not isinstance(manifest, dict) or manifest.get("schema_version") != SCHEMA_VERSION:
            found = manifest.get("schema_version") if isinstance(manifest, dict) else None
            raise ForelenError(f"{where} has schema version {found}; "
                               f"this forelen {__version__} reads version {SCHEMA_VERSION}")
        contracts.validate("manifest", manifest, where)
        return manifest

    @contextlib.contextmanager
    def _lock(self):
        if self.fs is not None:  # no locks on object stores: one writer (see the class docstring)
            yield
            return
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".forelen.lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def update(self, change: Callable[[dict], None]) -> dict:
        """Read-modify-write the manifest under the folder lock."""
        with self._lock():
            manifest = self.manifest()
            change(manifest)
            manifest["forelen_version"] = __version__
            contracts.validate("manifest", manifest, f"the manifest to write to {self.location}")
            self.write_bytes(MANIFEST,
                             (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
            return manifest

    def config(self, name: str) -> dict | None:
        return self.manifest()["configs"].get(name)

    # -- shards --------------------------------------------------------------------------------
    def config_dir(self, config: str):
        return self.path(f"data/{config}")

    def shard_path(self, config: str, name: str) -> str:
        """Where a shard lives, for messages."""
        return f"{self.location.rstrip('/')}/data/{config}/{name}"

    def write_shard(self, config: str, name: str, table) -> dict:
        """Write one parquet shard atomically; return its manifest entry."""
        import io

        import pyarrow.parquet as pq

        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        data = buf.getvalue()
        self.write_bytes(f"data/{config}/{name}", data)
        return {"sha256": hashlib.sha256(data).hexdigest(), "rows": table.num_rows,
                "bytes": len(data)}

    def shard_ok(self, config: str, name: str, entry: dict) -> bool:
        return self.sha256(f"data/{config}/{name}") == entry["sha256"]

    def read(self, config: str, partition: str | None = None, columns: list[str] | None = None):
        """Arrow table of a built config (float16 stays float16), after checking shard hashes."""
        import io

        import pyarrow as pa
        import pyarrow.parquet as pq

        entry = self.config(config)
        if entry is None:
            known = ", ".join(sorted(self.manifest()["configs"])) or "none"
            raise ForelenError(f"no config {config!r} in {self.location}; built: {known}")
        tables = []
        for name, shard in sorted(entry["shards"].items()):
            if partition and not name.startswith(f"{partition}-"):
                continue
            data = self.read_bytes(f"data/{config}/{name}") if self.exists(
                f"data/{config}/{name}") else b""
            if hashlib.sha256(data).hexdigest() != shard["sha256"]:
                raise ForelenError(f"shard {self.shard_path(config, name)} is missing or corrupt "
                                   "(sha256 differs from the manifest); rebuild the config")
            # use_threads=False: pyarrow 26's reader thread pool can abort the interpreter at exit
            # ("terminate called without an active exception", about half the runs here)
            tables.append(pq.read_table(io.BytesIO(data), columns=columns, use_threads=False))
        return pa.concat_tables(tables) if tables else None


def _protocols(fs) -> tuple:
    proto = fs.protocol
    return proto if isinstance(proto, tuple) else (proto,)


def partitions_present(entry: dict) -> list[str]:
    names = entry.get("shards", {})
    return [p for p in PARTITIONS if any(n.startswith(f"{p}-") for n in names)]
