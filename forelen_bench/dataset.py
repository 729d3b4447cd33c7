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
import tempfile
from pathlib import Path
from typing import Callable

from forelen_bench import __version__
from forelen_bench.errors import ForelenError
from forelen_bench.schema import PARTITIONS, SCHEMA_VERSION

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


class DatasetFolder:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    # -- manifest ------------------------------------------------------------------------------
    def manifest(self) -> dict:
        path = self.root / MANIFEST
        if not path.exists():
            return {"format": "forelen-dataset", "schema_version": SCHEMA_VERSION, "configs": {}}
        try:
            manifest = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ForelenError(f"cannot read {path}: {exc}") from None
        if manifest.get("schema_version") != SCHEMA_VERSION:
            raise ForelenError(f"{path} has schema version {manifest.get('schema_version')}; this "
                               f"forelen {__version__} reads version {SCHEMA_VERSION}")
        return manifest

    @contextlib.contextmanager
    def _lock(self):
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
            atomic_write_bytes(self.root / MANIFEST,
                               (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
            return manifest

    def config(self, name: str) -> dict | None:
        return self.manifest()["configs"].get(name)

    # -- shards --------------------------------------------------------------------------------
    def config_dir(self, config: str) -> Path:
        return self.root / "data" / config

    def write_shard(self, config: str, name: str, table) -> dict:
        """Write one parquet shard atomically; return its manifest entry."""
        import io

        import pyarrow.parquet as pq

        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        data = buf.getvalue()
        path = self.config_dir(config) / name
        atomic_write_bytes(path, data)
        return {"sha256": hashlib.sha256(data).hexdigest(), "rows": table.num_rows,
                "bytes": len(data)}

    def shard_ok(self, config: str, name: str, entry: dict) -> bool:
        path = self.config_dir(config) / name
        return path.is_file() and sha256_file(path) == entry["sha256"]

    def read(self, config: str, partition: str | None = None, columns: list[str] | None = None):
        """Arrow table of a built config (float16 stays float16), after checking shard hashes."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        entry = self.config(config)
        if entry is None:
            known = ", ".join(sorted(self.manifest()["configs"])) or "none"
            raise ForelenError(f"no config {config!r} in {self.root}; built: {known}")
        tables = []
        for name, shard in sorted(entry["shards"].items()):
            if partition and not name.startswith(f"{partition}-"):
                continue
            if not self.shard_ok(config, name, shard):
                raise ForelenError(f"shard {self.config_dir(config) / name} is missing or corrupt "
                                   "(sha256 differs from the manifest); rebuild the config")
            tables.append(pq.read_table(self.config_dir(config) / name, columns=columns))
        return pa.concat_tables(tables) if tables else None


def partitions_present(entry: dict) -> list[str]:
    names = entry.get("shards", {})
    return [p for p in PARTITIONS if any(n.startswith(f"{p}-") for n in names)]
