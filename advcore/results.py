"""Experiment results with provenance: small JSON (+ NPZ) files under ``results/``.

The book is built on machines without a GPU; paper-scale runs (Madry et al.'s 10^5 PGD
restarts, full PGD adversarial training) are made elsewhere with ``python -m advcore run
...`` and their small outputs are committed. A chapter then shows its live, profile-sized
result and, beside it, the committed paper-scale one, labelled with where and when it was
made.

Layout, one folder per experiment and one JSON per profile::

    results/<name>/<profile>.json                scalars, lists, nested dicts, provenance
    results/<name>/<profile>-<sha256[:12]>.npz   the arrays (only when there are any)

The JSON records the SHA-256 of its own content and of the NPZ. Both files are written
atomically (a temporary file in the same folder, then
``os.replace``), the NPZ first; the JSON names the NPZ by its content hash and is renamed
into place last, then the previous run's NPZ is removed. A reader therefore sees either
the previous complete result or the new complete one, never half a file or a mix of two
runs; a damaged pair is reported with a warning and treated as missing.

Example::

    from advcore.results import save_result, load_result
    save_result("landscape", {"final_losses": losses, "eps": 0.3}, profile="gpu", wall_time_s=512.0)
    result = load_result("landscape", profile="gpu")      # None when nothing is committed
    if result is not None:
        print(result.describe())
        losses = result["final_losses"]
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from advcore.storage import atomic_write_bytes, check_seal, seal

__all__ = [
    "MAX_BYTES",
    "RESULTS_ENV",
    "Result",
    "load_result",
    "provenance",
    "result_path",
    "results_dir",
    "save_result",
]

RESULTS_ENV = "ADVCORE_RESULTS"
#: Committed results stay small: this many bytes for the JSON and NPZ together.
MAX_BYTES = 8 * 1024 * 1024
_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]*$")  # result and profile names: safe as file names


# --------------------------------------------------------------------------- locations


def results_dir() -> Path:
    """Where results live: ``$ADVCORE_RESULTS``, else ``results/`` of the source checkout.

    The checkout is found from this file (``advcore/`` sits beside ``results/`` when the
    package is installed editable, as in this repository), so notebooks running in
    ``notebooks/`` and the CLI running at the repository root see the same folder. For a
    non-editable install (e.g. ``pip install`` in Colab) it falls back to ``./results``.
    """
    configured = os.environ.get(RESULTS_ENV, "").strip()
    if configured:
        return Path(configured).expanduser()
    if _in_checkout():
        return Path(__file__).resolve().parent.parent / "results"
    return Path.cwd() / "results"


def _in_checkout() -> bool:
    """Whether advcore runs from a source checkout (editable install), not from site-packages."""
    return (Path(__file__).resolve().parent.parent / "pyproject.toml").is_file()


def _check_names(name: str, profile: str) -> None:
    if not isinstance(name, str) or not _SLUG.match(name):
        raise ValueError(
            f"Result name must be lower-case letters, digits, '-' or '_' (e.g. 'landscape'), got {name!r}."
        )
    if not isinstance(profile, str) or not _SLUG.match(profile):
        raise ValueError(f"profile must be a profile name such as 'gpu' or 'cpu', got {profile!r}.")


def result_path(name: str, *, profile: str, root: str | Path | None = None) -> Path:
    """The JSON file of result ``name`` for ``profile`` under ``root`` (default :func:`results_dir`)."""
    _check_names(name, profile)
    folder = Path(root) if root is not None else results_dir()
    return folder / name / f"{profile}.json"


# --------------------------------------------------------------------------- provenance


def _git_commit() -> str | None:
    """The checkout's commit (with ``-dirty`` when tracked files changed), or None."""
    checkout = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=checkout, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=checkout,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if dirty else commit or None


def _device_name(device: torch.device | str | None) -> str:
    """E.g. ``"cuda: NVIDIA H200"`` or ``"cpu: x86_64 AVX2 (2 cores)"``: on a CPU, torch's vector
    capability (``AVX2``, ``AVX512``), which sets the speed of a run (``benchmarks/README.md``)."""
    device = torch.device(device) if device is not None else None
    if device is None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda" and torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(device)}"
    capability = f" {torch.backends.cpu.get_cpu_capability()}" if device.type == "cpu" else ""
    return f"{device.type}: {platform.processor() or platform.machine()}{capability} ({os.cpu_count()} cores)"


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def provenance(*, profile: str, wall_time_s: float, device: torch.device | str | None = None,
               command: str | None = None) -> dict[str, Any]:
    """Where, when and how a result was made: recorded in every result file."""
    return {
        "profile": profile,
        "device": _device_name(device),
        "torch": torch.__version__,
        "advcore": _version("advcore"),
        "python": platform.python_version(),
        "git_commit": _git_commit(),
        "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "wall_time_s": float(wall_time_s),
        "command": command if command is not None else " ".join(shlex.quote(a) for a in sys.argv),
    }


# --------------------------------------------------------------------------- saving


def _split(data: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Top-level arrays (numpy or torch) go to the NPZ; everything else must be JSON."""
    scalars: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}
    for key, value in data.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise ValueError(f"Result keys must be identifiers (e.g. 'final_losses'), got {key!r}.")
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        if isinstance(value, np.ndarray) and value.ndim > 0:
            if value.dtype == object:
                raise ValueError(f"Array {key!r} has dtype object; store numbers or strings only.")
            arrays[key] = value
        else:
            scalars[key] = value
    return scalars, arrays


def _to_json(value: Any) -> Any:
    """numpy/torch scalars to Python numbers; non-finite floats stay readable (NaN, Infinity)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable; store numbers, strings, "
                    "lists, dicts or arrays.")


def save_result(
    name: str,
    data: Mapping[str, Any],
    *,
    profile: str,
    wall_time_s: float,
    root: str | Path | None = None,
    device: torch.device | str | None = None,
    command: str | None = None,
    max_bytes: int = MAX_BYTES,
    resumed: Mapping[str, Any] | None = None,
) -> Path:
    """Save an experiment's result with its provenance; returns the JSON's path.

    Args:
        name: the experiment, e.g. ``"landscape"`` (lower case, digits, ``-``, ``_``).
        data: top-level numpy arrays / torch tensors go to an NPZ (compressed); every other
            value (numbers, strings, lists, nested dicts) to the JSON.
        profile: the profile the experiment ran at (``smoke``, ``cpu``, ``gpu``).
        wall_time_s: how long the experiment took.
        root: the results folder (default :func:`results_dir`).
        device: the device it ran on (default: CUDA if available, else CPU), for provenance.
        command: the command that made it (default: this process's ``sys.argv``).
        max_bytes: refuse results larger than this (committed results stay small).
        resumed: for a run that resumed an interrupted one, what came from the earlier run
            (recorded in the provenance; ``wall_time_s`` should then include its time).

    Raises:
        ValueError: a bad name or key, or the result is larger than ``max_bytes``.
    """
    json_path = result_path(name, profile=profile, root=root)
    scalars, arrays = _split(data)
    record: dict[str, Any] = {
        "name": name,
        "provenance": {**provenance(profile=profile, wall_time_s=wall_time_s, device=device, command=command),
                       **({"resumed": dict(resumed)} if resumed else {})},
        "data": scalars,
        "arrays": None,
    }
    npz_bytes = b""
    npz_path = None
    if arrays:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        npz_bytes = buffer.getvalue()
        digest = hashlib.sha256(npz_bytes).hexdigest()
        npz_path = json_path.with_name(f"{profile}-{digest[:12]}.npz")
        record["arrays"] = {
            "file": npz_path.name,
            "sha256": digest,
            "shapes": {key: list(value.shape) for key, value in arrays.items()},
            "dtypes": {key: str(value.dtype) for key, value in arrays.items()},
        }
    record = seal(json.loads(json.dumps(record, default=_to_json, allow_nan=True)))  # sealed as a reader reads it
    json_bytes = json.dumps(record, indent=1, allow_nan=True).encode()
    if len(json_bytes) + len(npz_bytes) > max_bytes:
        raise ValueError(
            f"Result {name!r} would take {(len(json_bytes) + len(npz_bytes)) / 2**20:.1f} MiB, more "
            f"than the {max_bytes / 2**20:.1f} MiB allowed for committed results; store summaries "
            "(histograms, subsamples, float16) instead of every raw number."
        )
    fresh_npz = npz_path is not None and not npz_path.exists()
    if npz_path is not None:
        atomic_write_bytes(npz_path, npz_bytes)  # first: the JSON that names it is renamed in last
    try:
        atomic_write_bytes(json_path, json_bytes)
    except BaseException:
        if fresh_npz:  # interrupted: the previous result stays complete; drop our orphan
            npz_path.unlink(missing_ok=True)
        raise
    for stale in json_path.parent.glob(f"{profile}-*.npz"):  # the previous runs' arrays
        if stale != npz_path:
            stale.unlink(missing_ok=True)
    return json_path


# --------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class Result:
    """A saved result: ``result["key"]`` reads a value (arrays come back as numpy arrays)."""

    name: str
    data: dict[str, Any]
    provenance: dict[str, Any]
    path: Path
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        if key in self.arrays:
            return self.arrays[key]
        if key in self.data:
            return self.data[key]
        raise KeyError(f"Result {self.name!r} has no {key!r}; it has {sorted(self.keys())}.")

    def __contains__(self, key: object) -> bool:
        return key in self.arrays or key in self.data

    def keys(self) -> list[str]:
        return [*self.data, *self.arrays]

    @property
    def profile(self) -> str:
        return self.provenance.get("profile", "?")

    def describe(self) -> str:
        """One line for a figure caption: profile, device, date, wall time, commit (or the provenance's
        own ``description``, for a result gathered from other committed files, e.g. the long runs)."""
        p = self.provenance
        if "description" in p:
            return p["description"]
        minutes = p.get("wall_time_s", float("nan")) / 60
        commit = (p.get("git_commit") or "unknown commit")[:12]
        return (f"`{p.get('profile', '?')}` profile on {p.get('device', 'an unknown device')}, "
                f"{p.get('created_utc', 'unknown date')}, {minutes:.1f} min, advcore "
                f"{p.get('advcore', '?')} at commit {commit}")


def load_result(name: str, *, profile: str = "gpu", root: str | Path | None = None,
                download: bool = True) -> Result | None:
    """The saved result ``name`` for ``profile``, or ``None`` when there is none (yet).

    Looks in ``root`` (default :func:`results_dir`). When advcore is installed without
    its repository (e.g. ``pip install`` in Colab) and ``download=True``, a result missing
    there is fetched from the repository's committed ``results/`` when online, into the
    cache; in a checkout, the checkout's ``results/`` is the only source. A result whose files are unreadable or do
    not match each other is reported with a warning and treated as missing, so a notebook
    never fails on a damaged file.
    """
    json_path = result_path(name, profile=profile, root=root)
    if (not json_path.is_file() and download and root is None and not _in_checkout()
            and not os.environ.get(RESULTS_ENV, "").strip()):
        json_path = _download(name, profile) or json_path  # e.g. Colab: no checkout, fetch what is committed
    for attempt in range(3):
        if not json_path.is_file():
            return None
        try:
            return _read(json_path, name=name, profile=profile)
        except FileNotFoundError:
            if attempt < 2:  # a concurrent save replaced the JSON and removed our NPZ: read again
                continue
            error: Exception = FileNotFoundError(f"the arrays file named in {json_path.name} is missing")
        except (OSError, ValueError, KeyError, TypeError) as caught:
            error = caught
        warnings.warn(f"Ignoring the damaged result {json_path}: {error}", stacklevel=2)
        return None
    return None


def _repository_results_url() -> str | None:
    """``https://raw.githubusercontent.com/<owner>/<repo>/main/results`` from the package metadata."""
    try:
        urls = metadata.metadata("advcore").get_all("Project-URL") or []
    except metadata.PackageNotFoundError:
        return None
    for entry in urls:
        label, _, url = entry.partition(",")
        match = re.match(r"^https://github\.com/([^/\s]+)/([^/\s]+?)/?$", url.strip())
        if label.strip().lower() == "repository" and match:
            return f"https://raw.githubusercontent.com/{match[1]}/{match[2]}/main/results"
    return None


def downloads_committed() -> bool:
    """Whether committed results come from the repository over the network: advcore installed
    without its checkout (e.g. ``pip install`` in Colab) and no ``$ADVCORE_RESULTS``."""
    return not _in_checkout() and not os.environ.get(RESULTS_ENV, "").strip()


def fetch_committed(relative: str, *, target: Path | None = None) -> Path | None:
    """Download ``results/<relative>`` from the repository to ``target``.

    ``target`` defaults to ``cache_dir() / "results" / relative``. For an installation without
    the checkout (:func:`downloads_committed`). Returns the local path, or ``None`` when offline,
    when the download fails, or when the repository has no such file. The caller checks the
    content (results and long runs carry their SHA-256).
    """
    from http.client import HTTPException
    from urllib.error import URLError
    from urllib.request import urlopen

    from advcore.data import cache_dir, is_online

    base = _repository_results_url()
    if base is None or not is_online(base):
        return None
    target = target if target is not None else cache_dir() / "results" / relative
    try:
        with urlopen(f"{base}/{relative}", timeout=60) as response:
            atomic_write_bytes(target, response.read())
    except (URLError, HTTPException, OSError, ValueError):  # 404 (nothing committed yet) and cut-off reads
        return None
    return target


def _download(name: str, profile: str) -> Path | None:
    """Fetch a committed result from the repository into the cache; None when offline or absent."""
    target = fetch_committed(f"{name}/{profile}.json")
    if target is None:
        return None
    try:
        info = json.loads(target.read_bytes()).get("arrays")
        if info and fetch_committed(f"{name}/{Path(info['file']).name}") is None:
            return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return target


def _read(json_path: Path, *, name: str, profile: str) -> Result:
    """Read and check a result: a JSON object of the expected layout, for ``name`` and ``profile``,
    whose NPZ matches the SHA-256 it records. Raises ``ValueError`` (or ``OSError``) otherwise."""
    record = json.loads(json_path.read_text())
    fields = {"name", "provenance", "data", "arrays"}
    if not isinstance(record, dict) or not fields <= set(record):
        raise ValueError(f"{json_path.name} is not an advcore result (expected a JSON object with name, "
                         f"provenance, data and arrays; got {type(record).__name__})")
    check_seal(record, known=fields, what=json_path.name)  # results saved before the seal have none
    if not isinstance(record["provenance"], dict) or not isinstance(record["data"], dict):
        raise ValueError(f"{json_path.name} is not an advcore result (provenance and data must be objects)")
    if record["name"] != name or record["provenance"].get("profile") != profile:
        raise ValueError(
            f"{json_path.name} holds the {record['provenance'].get('profile')!r} result of "
            f"{record['name']!r}, not the {profile!r} result of {name!r}: a file was copied over it")
    arrays: dict[str, np.ndarray] = {}
    info = record["arrays"]
    if info is not None and (not isinstance(info, dict) or not isinstance(info.get("file"), str)
                             or not isinstance(info.get("sha256"), str)):
        raise ValueError(f"{json_path.name} names its arrays file incorrectly")
    if info:
        npz_bytes = (json_path.parent / Path(info["file"]).name).read_bytes()
        if hashlib.sha256(npz_bytes).hexdigest() != info["sha256"]:
            raise ValueError(f"{info['file']} does not match the checksum recorded in {json_path.name}")
        with np.load(io.BytesIO(npz_bytes), allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    return Result(name=record["name"], data=record["data"], provenance=record["provenance"],
                  path=json_path, arrays=arrays)
