"""Write files and folders so a crash never leaves a half-written one under the final name.

Everything that persists state (shards, manifests, checkpoints, exported models) goes through
here: write to a temporary sibling, fsync, then rename over the final name.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)


def _tmp_sibling(path: Path) -> Path:
    # The writer's pid is in the name, so a later run can tell a leftover from a live writer's file.
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def leftovers(path: str | Path) -> list[Path]:
    """Temporary siblings of `path` left by writers that died (killed import, export, tokenize...).

    A name carrying the pid of a process still alive on this machine is someone else's write in
    progress and is not listed."""
    path = Path(path)
    out = []
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.tmp-*"):
        parts = tmp.name.rsplit(".tmp-", 1)[1].split("-")  # [pid, random] (older names: [random])
        if len(parts) == 2 and parts[0].isdigit() and _alive(int(parts[0])):
            continue
        out.append(tmp)
    return sorted(out)


def remove_leftovers(path: str | Path) -> list[Path]:
    """Delete `leftovers(path)`, saying so on the `gaperon.atomic` logger (shown as a warning)."""
    removed = []
    for tmp in leftovers(path):
        size = _size(tmp)
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        log.warning("removed %s (%.1f MB), left by an interrupted write of %s", tmp, size / 1e6, path)
        removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success rename it to `path` (file or folder).
    Temporaries that earlier, killed writers left next to `path` are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(path)
    tmp = _tmp_sibling(path)
    try:
        yield tmp
        if tmp.is_file():
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        if path.is_dir() and tmp.is_dir():
            old = _tmp_sibling(path)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: object, indent: int | None = 2) -> None:
    """`indent=None` for a file rewritten often: without indentation json encodes in C (~5x faster)."""
    write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
