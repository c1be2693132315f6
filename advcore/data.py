"""Datasets for the book: MNIST and CIFAR-10 through ``torchvision.datasets``, offline-first.

Where the files come from, in order:

1. the cache (``$ADVCORE_CACHE``, default ``~/.cache/advcore``), when its copy checks out;
2. a read-only data mirror (``$ADVCORE_DATA``, laid out like ``../shared/data``), copied
   into the cache and checked -- the mirror itself is never written to;
3. the internet, through torchvision's own download (with its checksums), when online.

Every file is verified against torchvision's published MD5 before it is used; a corrupted
or truncated cached file is reported with a warning, replaced, and never read. When no
source has the data, :class:`DataUnavailableError` says what is missing and how to provide
it, instead of a traceback from inside torchvision or a hang.

Images come back as float32 tensors in [0, 1] of shape ``(N, C, H, W)``, labels as int64
``(N,)``, wrapped in a :class:`torch.utils.data.TensorDataset`.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import shutil
import socket
import tarfile
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

import torch
import torchvision.datasets as tv_datasets
from torch.utils.data import TensorDataset

from advcore.profiles import Profile
from advcore.storage import atomic_write_bytes, atomic_writer

DATA_ENV = "ADVCORE_DATA"
CACHE_ENV = "ADVCORE_CACHE"
OFFLINE_ENV = "ADVCORE_OFFLINE"

Split = Literal["train", "test"]


class DataUnavailableError(RuntimeError):
    """The data is in neither the cache nor the mirror, and cannot be downloaded."""


# --------------------------------------------------------------------------- locations


def cache_dir() -> Path:
    """The writable cache: ``$ADVCORE_CACHE`` or ``~/.cache/advcore`` (created on demand)."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "advcore"
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def mirror_dir() -> Path | None:
    """The read-only data mirror named by ``$ADVCORE_DATA``, or ``None``.

    Raises:
        DataUnavailableError: ``$ADVCORE_DATA`` names a folder that does not exist.
    """
    root = os.environ.get(DATA_ENV, "").strip()
    if not root:
        return None
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataUnavailableError(
            f"{DATA_ENV}={root!r} is not a folder. Point it at a data mirror laid out like "
            "`shared/data` (MNIST/raw/*.gz, imagenet/...), or unset it to download."
        )
    return path


@functools.cache
def _host_reachable(host: str, timeout_s: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, 443), timeout=timeout_s):
            return True
    except OSError:
        return False


def is_online(url: str = "https://download.pytorch.org") -> bool:
    """Whether ``url``'s host answers within a few seconds (``ADVCORE_OFFLINE=1``: never)."""
    if os.environ.get(OFFLINE_ENV, "").strip() not in ("", "0"):
        return False
    return _host_reachable(urlparse(url).hostname or url)


# --------------------------------------------------------------------------- file checks


def file_digest(path: Path, algorithm: str = "md5") -> str:
    """Hex digest of a file, read in 1 MiB blocks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_intact(path: Path, expected: str, algorithm: str) -> bool:
    return path.is_file() and file_digest(path, algorithm) == expected


def _atomic_copy(source: Path, target: Path) -> None:
    """Copy via a temporary file in the target folder, so a cut-off copy is never seen."""
    with atomic_writer(target) as tmp, open(source, "rb") as src:
        shutil.copyfileobj(src, tmp, 1 << 20)


def fetch_verified(
    filename: str,
    *,
    expected: str,
    algorithm: str = "md5",
    cache_subdir: str,
    mirror_paths: Iterable[str] = (),
    urls: Iterable[str] = (),
    what: str,
    how_to_get: str,
) -> Path:
    """A verified copy of ``filename`` in ``cache_dir()/cache_subdir``; see module docstring.

    Args:
        expected: the file's published digest (``algorithm``, default MD5).
        mirror_paths: where the file may sit inside ``$ADVCORE_DATA``, first match wins.
        urls: download locations (tried in order when online).
        what, how_to_get: words for the error when no source has the file.
    """
    target = cache_dir() / cache_subdir / filename
    if target.exists():
        if _is_intact(target, expected, algorithm):
            return target
        warnings.warn(
            f"The cached {target} is corrupted or truncated ({algorithm} mismatch); "
            "it will not be used and is being replaced.",
            stacklevel=2,
        )
        target.unlink()

    mirror = mirror_dir()
    for relative in mirror_paths if mirror else ():
        candidate = mirror / relative
        if candidate.is_file():
            if not _is_intact(candidate, expected, algorithm):
                raise DataUnavailableError(
                    f"The mirror's {candidate} fails its {algorithm} check (expected {expected}): "
                    "the mirror is damaged. Restore that file, or unset "
                    f"{DATA_ENV} to download instead."
                )
            _atomic_copy(candidate, target)
            return target

    for url in urls:
        if not is_online(url):
            continue
        with tempfile.TemporaryDirectory(dir=target.parent.parent) as tmp:
            try:
                # torchvision's downloader checks the MD5 itself when given one.
                tv_datasets.utils.download_url(url, tmp, filename=filename,
                                               md5=expected if algorithm == "md5" else None)
            except Exception as error:  # network errors vary by backend; try the next URL
                warnings.warn(f"Download of {url} failed: {error}", stacklevel=2)
                continue
            downloaded = Path(tmp) / filename
            if _is_intact(downloaded, expected, algorithm):
                _atomic_copy(downloaded, target)  # fsync-ed into place, as every file advcore writes
                return target

    looked = [str(mirror / p) for p in mirror_paths] if mirror else [f"(no mirror: {DATA_ENV} is not set)"]
    raise DataUnavailableError(
        f"{what} is not available: {filename} is not in the cache ({target}), not in the "
        f"data mirror (looked at: {', '.join(looked)}), and it cannot be downloaded "
        f"(offline). {how_to_get}"
    )


# --------------------------------------------------------------------------- MNIST


_MNIST_HOW = (
    f"Set {DATA_ENV} to a mirror holding MNIST/raw/*.gz (for example "
    f"`export {DATA_ENV}=../shared/data`), or run once with internet access."
)


def _extract_gzip(archive: Path, target: Path, *, archive_md5: str) -> None:
    """Decompress ``archive`` to ``target`` atomically; record beside it which archive it came
    from and the result's MD5 (``<archive md5> <extracted md5>`` in ``target.verified``)."""
    digest = hashlib.md5()
    with atomic_writer(target) as tmp, gzip.open(archive, "rb") as src:
        for block in iter(lambda: src.read(1 << 20), b""):
            digest.update(block)
            tmp.write(block)
    atomic_write_bytes(_extracted_record(target), f"{archive_md5} {digest.hexdigest()}".encode())


def _extract_tar(archive: Path, root: Path) -> None:
    """Extract the regular files of ``archive`` under ``root``, each written atomically (a killed
    extraction leaves whole old or new files, which the caller's checksums then judge)."""
    with tarfile.open(archive) as tar:
        for member in tar:
            member = tarfile.data_filter(member, str(root))  # no absolute paths, no "..", no links out
            if not member.isfile():
                continue
            target = root / member.name
            with atomic_writer(target) as out, tar.extractfile(member) as src:
                shutil.copyfileobj(src, out, 1 << 20)


def _extracted_record(extracted: Path) -> Path:
    # Not the ``.md5`` of earlier versions (the extracted file's digest alone), so both can share a cache.
    return extracted.with_name(extracted.name + ".verified")


def _extracted_is_intact(extracted: Path, archive_md5: str) -> bool:
    """Whether ``extracted`` is the intact content of the archive with MD5 ``archive_md5``.

    The record names the archive, so neither a damaged file nor another dataset file copied
    over it (with or without its record) passes.
    """
    try:
        recorded = _extracted_record(extracted).read_text().split()
    except (OSError, ValueError):  # missing, or not even text
        return False
    return (len(recorded) == 2 and recorded[0] == archive_md5 and extracted.is_file()
            and file_digest(extracted) == recorded[1])


def _ensure_mnist_files() -> Path:
    """Verified MNIST idx files in ``cache_dir()/MNIST/raw``; returns the cache root."""
    for archive_name, md5 in tv_datasets.MNIST.resources:
        archive = fetch_verified(
            archive_name,
            expected=md5,
            cache_subdir="MNIST/raw",
            mirror_paths=[f"MNIST/raw/{archive_name}"],
            urls=[mirror + archive_name for mirror in tv_datasets.MNIST.mirrors],
            what="MNIST",
            how_to_get=_MNIST_HOW,
        )
        extracted = archive.with_suffix("")  # train-images-idx3-ubyte.gz -> ...-ubyte
        if _extracted_is_intact(extracted, md5):
            continue
        if _extracted_record(extracted).exists():  # no record: an earlier version's, redo quietly
            warnings.warn(
                f"The cached {extracted} is corrupted or truncated (or not the content of "
                f"{archive_name}); re-extracting it from the verified archive.",
                stacklevel=2,
            )
        _extract_gzip(archive, extracted, archive_md5=md5)
    return cache_dir()


@functools.cache
def _mnist_tensors(split: Split) -> tuple[torch.Tensor, torch.Tensor]:
    """The process's one copy of MNIST: uint8 images ``(N, 28, 28)`` and int64 labels.

    Kept private and never handed out: every caller gets float tensors made fresh from it
    (:func:`_fresh_mnist`), so no caller can change what another one loads.
    """
    root = _ensure_mnist_files()
    dataset = tv_datasets.MNIST(root=str(root), train=(split == "train"), download=False)
    return dataset.data, dataset.targets.long()


def _fresh_mnist(split: Split, rows: slice = slice(None)) -> tuple[torch.Tensor, torch.Tensor]:
    """Fresh float images ``(n, 1, 28, 28)`` in [0, 1] and int64 labels of ``rows`` of a split."""
    images, labels = _mnist_tensors(split)
    return images[rows].unsqueeze(1).float().div_(255.0), labels[rows].clone()


def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}.")


def _check_limit(limit: int | None, total: int) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or not 0 < limit <= total):
        raise ValueError(f"limit must be an integer between 1 and {total}, not {limit!r}.")


def load_mnist(split: Split = "train", *, limit: int | None = None) -> TensorDataset:
    """MNIST (LeCun et al. 1998) as float images ``(N, 1, 28, 28)`` in [0, 1] and labels ``(N,)``.

    Args:
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000).
        limit: keep only the first ``limit`` examples (MNIST's order is already mixed).

    Raises:
        DataUnavailableError: MNIST is in neither the cache nor the mirror, and offline.
    """
    _check_split(split)
    _check_limit(limit, len(_mnist_tensors(split)[1]))
    return TensorDataset(*_fresh_mnist(split, slice(limit)))


def mnist_splits(profile: Profile) -> tuple[TensorDataset, TensorDataset, TensorDataset]:
    """Train, validation and test sets sized by ``profile``.

    Training takes the first ``profile.mnist_train`` training images, validation the last
    ``profile.mnist_val`` (so the two never overlap), test the first ``profile.mnist_test``
    test images.
    """
    total = len(_mnist_tensors("train")[1])
    if profile.mnist_train + profile.mnist_val > total:
        raise ValueError(
            f"Profile {profile.name!r} asks for {profile.mnist_train} training and "
            f"{profile.mnist_val} validation images; MNIST has {total}."
        )
    train = TensorDataset(*_fresh_mnist("train", slice(profile.mnist_train)))
    val = TensorDataset(*_fresh_mnist("train", slice(total - profile.mnist_val, None)))
    return train, val, load_mnist("test", limit=profile.mnist_test)


# --------------------------------------------------------------------------- CIFAR-10


_CIFAR_HOW = (
    "CIFAR-10 has no offline copy here. On a machine with internet (e.g. Colab) it is "
    "downloaded automatically; offline, put torchvision's cifar-10-python.tar.gz into the "
    f"mirror as CIFAR10/cifar-10-python.tar.gz and set {DATA_ENV}."
)


def _ensure_cifar10() -> Path:
    """Verified, extracted CIFAR-10 batches under ``cache_dir()/CIFAR10``; returns that root."""
    root = cache_dir() / "CIFAR10"
    probe = tv_datasets.CIFAR10.__new__(tv_datasets.CIFAR10)
    probe.root = str(root)
    if root.exists() and probe._check_integrity():  # torchvision's per-batch MD5 check
        return root
    archive = fetch_verified(
        tv_datasets.CIFAR10.filename,
        expected=tv_datasets.CIFAR10.tgz_md5,
        cache_subdir="CIFAR10",
        mirror_paths=["CIFAR10/cifar-10-python.tar.gz", "cifar-10-python.tar.gz"],
        urls=[tv_datasets.CIFAR10.url],
        what="CIFAR-10",
        how_to_get=_CIFAR_HOW,
    )
    if (root / tv_datasets.CIFAR10.base_folder).exists():
        warnings.warn("The cached CIFAR-10 batches are corrupted; re-extracting them.", stacklevel=2)
    _extract_tar(archive, root)
    if not probe._check_integrity():
        raise DataUnavailableError(f"CIFAR-10 in {root} fails torchvision's checksums after extraction.")
    return root


def cifar10_available() -> bool:
    """Whether CIFAR-10 can be had: cached, in the mirror, or downloadable now."""
    try:
        _ensure_cifar10()
    except DataUnavailableError:
        return False
    return True


@functools.cache
def _cifar10_tensors(split: Split) -> tuple[torch.Tensor, torch.Tensor]:
    """The process's one, private copy of CIFAR-10: uint8 ``(N, 32, 32, 3)`` and int64 labels."""
    dataset = tv_datasets.CIFAR10(root=str(_ensure_cifar10()), train=(split == "train"), download=False)
    return torch.from_numpy(dataset.data), torch.tensor(dataset.targets, dtype=torch.long)


def load_cifar10(split: Split = "train", *, limit: int | None = None) -> TensorDataset:
    """CIFAR-10 (Krizhevsky 2009) as float images ``(N, 3, 32, 32)`` in [0, 1], labels ``(N,)``.

    Raises:
        DataUnavailableError: offline with no copy in the cache or the mirror.
    """
    _check_split(split)
    images, labels = _cifar10_tensors(split)
    _check_limit(limit, len(labels))
    fresh = images[:limit].permute(0, 3, 1, 2).float().div_(255.0).contiguous()
    return TensorDataset(fresh, labels[:limit].clone())


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
