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

Checksums: :func:`advcore.train.save_checkpoint` (a SHA-256 header; also used for
experiment pieces); JSON records that check themselves (:func:`seal`, :func:`check_seal`:
the zoo's ``manifest.json``, which holds the SHA-256 of each file of its entry, and the
results' JSON, which holds the SHA-256 of its NPZ).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

__all__ = ["ORPHAN_AGE_S", "atomic_write_bytes", "atomic_writer", "check_seal", "json_digest", "record_digest",
           "remove_orphans", "seal"]

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


# --------------------------------------------------------------------------- JSON records that check themselves


SEAL = "sha256"


def json_digest(value: Any) -> str:
    """SHA-256 (hex) of ``value`` as JSON with sorted keys, non-JSON values as ``str()``: the key of a
    configuration (a zoo recipe, a training run, a long run, an experiment piece). Changing this
    changes every key, so cached models, checkpoints and committed runs would no longer be found."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def record_digest(record: Mapping[str, Any]) -> str:
    """SHA-256 of a JSON record's content, without its seal (not its layout: indentation and
    line endings may change, e.g. in a git checkout on Windows). Stricter than :func:`json_digest`
    (no ``str()`` fallback), and its own canonical form: the seals already written depend on it."""
    canonical = json.dumps({k: v for k, v in record.items() if k != SEAL}, sort_keys=True,
                           separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def seal(record: Mapping[str, Any]) -> dict[str, Any]:
    """``record`` with its own checksum under ``"sha256"`` (check it with :func:`check_seal`)."""
    return {**record, SEAL: record_digest(record)}


def check_seal(record: Any, *, known: set[str], what: str) -> None:
    """Raise ``ValueError`` unless ``record`` is a JSON object of ``known`` keys whose seal matches.

    A record without a seal (written before advcore sealed its records) passes when it has
    no unknown key -- so a damaged key name, ``"sha256"`` included, is caught too.
    """
    if not isinstance(record, dict):
        raise ValueError(f"{what} is not a JSON object (got {type(record).__name__})")
    unknown = set(record) - known - {SEAL}
    if unknown:
        raise ValueError(f"{what} has unknown fields {sorted(unknown)}: it was edited or damaged")
    if SEAL in record and record[SEAL] != record_digest(record):
        raise ValueError(f"{what} does not match its recorded checksum: it was edited or damaged")
