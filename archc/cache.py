"""Facts about the shipped specs, kept between runs in the user's cache folder.

Naming a model (`archc summary resnet50`) looks it up among every family spec's variants, and
`archc list` compiles every shipped model to show its parameters and MACs: both read every
spec file, which takes longer than the rest of the command. Their results are plain JSON
values, stored under a fingerprint of every file they are computed from (each file's path,
size and modification time: the shipped specs, the built-in blocks and archc's own source), so
any edit recomputes them and a stale value is never read.

The folder is `$ARCHC_CACHE_DIR`, else `$XDG_CACHE_HOME/archc`, else `~/.cache/archc`;
`ARCHC_CACHE_DIR=none` turns the cache off. A folder that cannot be written, or a file that
cannot be read, only means the value is computed again.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

PACKAGE = Path(__file__).resolve().parent
OFF = "none"


def folder() -> Path | None:
    """Where values are kept, or None when caching is off."""
    chosen = os.environ.get("ARCHC_CACHE_DIR")
    if chosen is not None:
        return None if chosen.strip().lower() in (OFF, "") else Path(chosen)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "archc"


def _files(root: Path, suffixes: tuple[str, ...]) -> Iterable[str]:
    """Every file under `root` with one of the suffixes (os.scandir: no pathlib on this path)."""
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            if entry.name != "__pycache__":
                yield from _files(Path(entry.path), suffixes)
        elif entry.name.endswith(suffixes):
            yield entry.path


def fingerprint(roots: Iterable[tuple[Path, tuple[str, ...]]]) -> str:
    """A digest of the path, size and modification time of every file under the roots (with
    those suffixes), of archc's own source, and of the Python version."""
    digest = hashlib.sha256(f"{sys.version_info[:2]}".encode())
    for root, suffixes in [(PACKAGE, (".py", ".yaml")), *roots]:
        for path in _files(root, suffixes):
            try:
                info = os.stat(path)
            except OSError:
                continue
            digest.update(f"{path}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


def cached(name: str, roots: Iterable[tuple[Path, tuple[str, ...]]], compute: Callable[[], Any]) -> Any:
    """`compute()` (a JSON value), or the value stored under `name` when nothing it depends on
    (the files under `roots`, archc's source) has changed since it was stored."""
    where = folder()
    if where is None:
        return compute()
    roots = list(roots)
    key = fingerprint(roots)
    # one file per checkout (the folders' paths), so two checkouts do not undo each other's
    place = hashlib.sha256("\0".join(str(r) for r, _ in [(PACKAGE, ()), *roots]).encode())
    file = where / f"{name}-{place.hexdigest()[:12]}.json"
    try:
        stored = json.loads(file.read_text(encoding="utf-8"))
        if stored.get("key") == key:
            return stored["value"]
    except (OSError, ValueError, AttributeError, KeyError):
        pass  # missing, unreadable or not ours: compute it again
    value = compute()
    _store(file, {"key": key, "value": value})
    return value


def _store(file: Path, data: dict) -> None:
    """Write atomically (another archc may be reading it); a cache that cannot be written is
    no error."""
    import tempfile

    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=f".{file.stem}-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle)
            os.replace(tmp, file)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:
        pass
