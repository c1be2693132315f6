"""Files advcore writes: atomic, shareable, and never left half-written.

One home for how the cache and the results are written (datasets copied from the mirror,
zoo models and manifests, training checkpoints, experiment pieces, result files):

* :func:`atomic_write_bytes` / :func:`atomic_writer` write to a temporary file in the
  target's folder, ``fsync`` it and ``os.replace`` it into place, so a reader sees the old
  content or the new one, never part of a file -- also when the writer is killed;
* the temporary file's name carries the writer's process id
  (``.<name>.<pid>.<random>.tmp``); one left behind by a killed writer (``kill -9``
  cannot be caught) is removed by the next write of the same file, once its writer is
  gone (or after a day, for a writer on another machine of a shared file system);
* files get the permissions of an ordinary new file (``0666`` minus the umask, usually
  ``0644``), not ``mkstemp``'s ``0600``, so a cache shared by a class is readable by all.

Checksums live with the formats that use them: :func:`advcore.train.save_checkpoint`
(SHA-256 header; also used for experiment pieces), the zoo's ``manifest.json``
(SHA-256 per file) and the results' JSON (SHA-256 of the NPZ).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["ORPHAN_AGE_S", "atomic_write_bytes", "atomic_writer", "remove_orphans"]

#: A temporary file whose writer cannot be checked (another machine) counts as orphaned after this.
ORPHAN_AGE_S = 24 * 3600.0


def _umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: read it by setting it, and put it straight back
    os.umask(mask)
    return mask


def _temporary_name_pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"^\.{re.escape(name)}\.(?:(\d+)\.)?[^.]+\.tmp$")


def _writer_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_orphans(path: Path) -> list[Path]:
    """Remove temporary files of ``path`` left by writers that were killed; return them.

    A temporary file counts as orphaned when the process named in it no longer runs, or,
    without a readable process id, when it is older than :data:`ORPHAN_AGE_S`.
    """
    path = Path(path)
    pattern = _temporary_name_pattern(path.name)
    removed = []
    try:
        candidates = list(path.parent.iterdir())
    except OSError:
        return removed
    now = time.time()
    for candidate in candidates:
        match = pattern.match(candidate.name)
        if match is None:
            continue
        try:
            if match[1] is not None and int(match[1]) != os.getpid():
                orphaned = not _writer_alive(int(match[1])) or now - candidate.stat().st_mtime > ORPHAN_AGE_S
            else:
                orphaned = match[1] is None and now - candidate.stat().st_mtime > ORPHAN_AGE_S
            if orphaned:
                candidate.unlink()
                removed.append(candidate)
        except OSError:  # another process removed it meanwhile
            continue
    return removed


@contextlib.contextmanager
def atomic_writer(path: str | Path) -> Iterator[BinaryIO]:
    """A binary handle whose content replaces ``path`` atomically when the block ends without error.

    On an exception (also ``KeyboardInterrupt``) the temporary file is removed and ``path``
    keeps its old content. Temporary files of earlier, killed writers are removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_orphans(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:  # also KeyboardInterrupt: never leave the temporary behind
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_writer`)."""
    with atomic_writer(path) as handle:
        handle.write(data)
