"""Freezing a release (`forelen release`): the records of a results folder copied into
`releases/<version>/` with the manifest (`release.build_manifest`), the page (`render`) and the
Space's README, written whole or not at all. Apart from release.py, which the page reads."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from forelen.errors import ForelenError
from forelen.leaderboard import render
from forelen.leaderboard.release import (MANIFEST, PAGE, RECORDS, build_manifest, check_clean,
                                         check_version, dirty_notes, load_records)


def read_notes(notes: str | None) -> str | None:
    """--notes is text, or the path of a text/Markdown file holding it."""
    if not notes:
        return None
    with contextlib.suppress(OSError, ValueError):
        if len(notes) < 4096 and Path(notes).is_file():
            return Path(notes).read_text().strip()
    return notes.strip()


def make_release(version: str, results: str | Path = "results", out: str | Path = "releases",
                 supersedes: str | None = None, notes: str | None = None,
                 allow_dirty: bool = False) -> Path:
    """Freeze the records of `results` into `out/version`; return the new folder. Records from a
    dirty tree are refused unless `allow_dirty`, which lists them in the notes and manifest."""
    check_version(version)
    out = Path(out)
    dest = out / version
    if dest.exists():
        raise ForelenError(f"release {version} already exists at {dest}; releases are never "
                           f"overwritten: publish a correction as a new version with "
                           f"--supersedes {version}")
    if supersedes is not None:
        check_version(supersedes, "--supersedes")
        if supersedes == version:
            raise ForelenError(f"release {version} cannot supersede itself")
        if not (out / supersedes / MANIFEST).is_file():
            raise ForelenError(f"--supersedes {supersedes}: no release {supersedes} in {out}")
    records = load_records(results)
    dirty = check_clean(records, allow_dirty)
    manifest = build_manifest(records, version, supersedes,
                              dirty_notes(read_notes(notes), dirty, len(records)),
                              time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    bodies = [r.body for r in records]
    files = {f"{RECORDS}/{r.rel}": r.data for r in records}
    files[MANIFEST] = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    files[PAGE] = render.render_page(bodies, manifest).encode()
    files["README.md"] = space_readme(manifest).encode()
    _write_tree(dest, files)
    return dest


def space_readme(manifest: dict) -> str:
    """Front matter that serves the folder as a static hub Space, plus a short description."""
    version = manifest["release"]
    lines = ["---", f"title: ForeLen leaderboard {version}", "sdk: static", "app_file: index.html",
             "pinned: false", "tags:", "- leaderboard", "- output-length-prediction", "- forelen",
             "---", "", f"# ForeLen leaderboard {version}", "",
             f"Released {manifest['created_at']} by forelen {manifest['forelen_version']} "
             f"(commit `{manifest['git_commit']}`). Open `index.html`; `manifest.json` lists the "
             "sha256 of every result record under `records/`."]
    if manifest.get("supersedes"):
        lines += ["", f"Supersedes {manifest['supersedes']}."]
    if manifest.get("dirty_records"):
        lines += ["", f"{len(manifest['dirty_records'])} records were made from a dirty tree "
                  "(released with --allow-dirty); `manifest.json` lists them under "
                  "`dirty_records`."]
    return "\n".join(lines) + "\n"


def _write_tree(dest: Path, files: dict[str, bytes]) -> None:
    """Write every file into a temp folder beside `dest`, then rename it into place in one step."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".tmp-{dest.name}-"))
    except OSError as exc:
        raise ForelenError(f"cannot write release {dest}: {exc.strerror or exc}") from None
    try:
        for rel, data in sorted(files.items()):
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(path, 0o444)  # frozen: a release is read, never edited
        os.chmod(tmp, 0o755)
        if dest.exists():  # rename() would replace an existing *empty* folder: refuse any
            raise FileExistsError(errno.EEXIST, "exists", str(dest))
        os.rename(tmp, dest)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise ForelenError(f"release {dest.name} appeared at {dest} while this one was being "
                               "written; nothing was changed") from None
        raise ForelenError(f"cannot write release {dest}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
