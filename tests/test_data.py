"""The offline data layer: verified copies, clear errors, and a mirror that stays untouched."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
import torch

from advcore import data, imagenet
from advcore.profiles import current_profile

MIRROR = Path(os.environ["ADVCORE_DATA"]) if os.environ.get("ADVCORE_DATA") else None
needs_mirror = pytest.mark.skipif(MIRROR is None, reason="needs a data mirror (ADVCORE_DATA)")


def _clear_memo() -> None:
    data._mnist_tensors.cache_clear()
    data._cifar10_tensors.cache_clear()


@pytest.fixture
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache for one test, and no in-memory copies from earlier tests."""
    cache = tmp_path / "cache"
    monkeypatch.setenv(data.CACHE_ENV, str(cache))
    _clear_memo()
    yield cache
    _clear_memo()


@pytest.fixture
def offline_without_mirror(fresh_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv(data.DATA_ENV, raising=False)
    monkeypatch.setenv(data.OFFLINE_ENV, "1")
    return fresh_cache


def _mirror_snapshot(root: Path) -> dict[str, tuple[str, int, int]]:
    """sha256, size and mtime of every file below ``root``."""
    snapshot = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        stat = path.stat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        snapshot[str(path.relative_to(root))] = (digest, stat.st_size, stat.st_mtime_ns)
    return snapshot


@needs_mirror
def test_mnist_from_mirror_has_expected_shapes_and_range(fresh_cache: Path) -> None:
    test_set = data.load_mnist("test")
    images, labels = test_set.tensors
    assert images.shape == (10_000, 1, 28, 28) and images.dtype == torch.float32
    assert labels.shape == (10_000,) and labels.dtype == torch.int64
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert set(labels.unique().tolist()) == set(range(10))
    # The copy in the cache is exactly the mirror's file.
    cached = fresh_cache / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
    assert cached.read_bytes() == (MIRROR / "MNIST" / "raw" / cached.name).read_bytes()


@needs_mirror
def test_mnist_splits_are_disjoint_and_sized_by_profile(fresh_cache: Path) -> None:
    profile = current_profile("smoke")
    train, val, test = data.mnist_splits(profile)
    assert (len(train), len(val), len(test)) == (profile.mnist_train, profile.mnist_val, profile.mnist_test)
    full = data.load_mnist("train").tensors[0]
    assert torch.equal(val.tensors[0], full[-profile.mnist_val :])
    assert not torch.equal(train.tensors[0][-1], val.tensors[0][0])


@needs_mirror
def test_corrupted_cached_archive_is_reported_and_replaced(fresh_cache: Path) -> None:
    data.load_mnist("test", limit=10)
    archive = fresh_cache / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz"
    corrupted = bytearray(archive.read_bytes())
    corrupted[1000] ^= 0xFF
    archive.write_bytes(bytes(corrupted))
    _clear_memo()
    with pytest.warns(UserWarning, match="corrupted or truncated"):
        images = data.load_mnist("test", limit=10).tensors[0]
    assert data.file_digest(archive) == dict(data.tv_datasets.MNIST.resources)[archive.name]
    assert images.shape == (10, 1, 28, 28)


@needs_mirror
def test_truncated_extracted_file_is_reported_and_reextracted(fresh_cache: Path) -> None:
    expected = data.load_mnist("test", limit=50).tensors[0].clone()
    extracted = fresh_cache / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    extracted.write_bytes(extracted.read_bytes()[: 16 + 784 * 20])  # keeps 20 images
    _clear_memo()
    with pytest.warns(UserWarning, match="corrupted or truncated"):
        images = data.load_mnist("test", limit=50).tensors[0]
    assert torch.equal(images, expected)


def test_offline_without_mirror_gives_one_clear_error(offline_without_mirror: Path) -> None:
    with pytest.raises(data.DataUnavailableError) as raised:
        data.load_mnist("train")
    message = str(raised.value)
    assert "MNIST" in message and data.DATA_ENV in message and "offline" in message


def test_offline_without_mirror_has_no_imagenet_classifier(offline_without_mirror: Path) -> None:
    with pytest.raises(data.DataUnavailableError, match=data.DATA_ENV):
        imagenet.pretrained_classifier(source="mirror")


def test_cifar10_offline_says_what_is_missing(offline_without_mirror: Path) -> None:
    assert not data.cifar10_available()
    with pytest.raises(data.DataUnavailableError, match="CIFAR-10"):
        data.load_cifar10("test")


def test_mirror_that_does_not_exist_is_named(fresh_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(data.DATA_ENV, str(fresh_cache / "no-such-mirror"))
    with pytest.raises(data.DataUnavailableError, match="no-such-mirror"):
        data.load_mnist("test")


@needs_mirror
def test_damaged_mirror_file_is_refused(fresh_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    damaged = tmp_path / "mirror"
    shutil.copytree(MIRROR / "MNIST", damaged / "MNIST")
    labels = damaged / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
    labels.chmod(0o644)
    labels.write_bytes(labels.read_bytes()[:-100])
    monkeypatch.setenv(data.DATA_ENV, str(damaged))
    monkeypatch.setenv(data.OFFLINE_ENV, "1")
    with pytest.raises(data.DataUnavailableError, match="damaged"):
        data.load_mnist("test")


def test_bad_split_and_limit_are_rejected() -> None:
    with pytest.raises(ValueError, match="split"):
        data.load_mnist("validation")  # type: ignore[arg-type]


@needs_mirror
def test_offline_classifier_labels_the_panda_and_mirror_is_unchanged(fresh_cache: Path) -> None:
    before = _mirror_snapshot(MIRROR)
    classifier = imagenet.pretrained_classifier(source="mirror")
    assert classifier.source == "mirror" and "ResNet-50" in classifier.name
    panda = imagenet.load_panda()
    assert panda.shape == (1, 3, 224, 224) and 0.0 <= panda.min() and panda.max() <= 1.0
    (top_name, top_probability), *_ = imagenet.top_predictions(classifier.model, panda)[0]
    assert top_name == "giant_panda" and top_probability > 0.5
    assert imagenet.class_names()[imagenet.GIANT_PANDA] == "giant_panda"
    assert imagenet.class_names()[imagenet.GIBBON] == "gibbon"
    data.load_mnist("train", limit=10)
    assert _mirror_snapshot(MIRROR) == before


@needs_mirror
def test_truncated_cached_weights_are_rejected(fresh_cache: Path) -> None:
    imagenet.pretrained_classifier(source="mirror")
    weights = fresh_cache / "imagenet" / "resnet50-v1-caffe.pth"
    weights.write_bytes(weights.read_bytes()[: 1 << 20])
    with pytest.warns(UserWarning, match="corrupted or truncated"):
        imagenet.pretrained_classifier(source="mirror")
    assert weights.stat().st_size == (MIRROR / "imagenet" / weights.name).stat().st_size


@needs_mirror
def test_damaging_loaded_tensors_changes_nothing_for_later_callers() -> None:
    # Issue 15, item 1: every call returns its own tensors; in-place edits (a student's
    # `x.sub_(0.1307)`, or worse) stay with the caller and never reach the zoo's training data.
    from advcore import zoo

    profile = current_profile("smoke")
    before_train, before_val, before_test = (s.tensors for s in data.mnist_splits(profile))
    reference = [t.clone() for t in (*before_train, *before_val, *before_test)]
    first_ten = data.load_mnist("train", limit=10).tensors[0].clone()
    for loaded in (data.load_mnist("train"), data.load_mnist("test"), *data.mnist_splits(profile)):
        images, labels = loaded.tensors
        images.sub_(0.1307)  # an in-place normalization
        labels.fill_(3)
    assert torch.equal(data.load_mnist("train", limit=10).tensors[0], first_ten)
    again = [t for s in data.mnist_splits(profile) for t in s.tensors]
    assert all(torch.equal(a, b) for a, b in zip(again, reference))
    train_set, val_set = zoo._training_data(zoo.recipe("softmax", profile=profile), profile)
    assert torch.equal(train_set.tensors[0], reference[0]) and torch.equal(train_set.tensors[1], reference[1])
    assert torch.equal(val_set.tensors[0], reference[2])


def _recording_atomic_writer(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Record every path data.py writes through advcore.storage's atomic writer."""
    written: list[Path] = []
    real = data.atomic_writer

    def recording(path):
        written.append(Path(path))
        return real(path)

    monkeypatch.setattr(data, "atomic_writer", recording)
    return written


def test_a_download_is_written_by_the_one_atomic_writer(fresh_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    content = b"an archive" * 1000
    written = _recording_atomic_writer(monkeypatch)
    monkeypatch.setattr(data, "is_online", lambda url=None: True)

    def download_url(url, root, filename=None, md5=None):
        assert md5 == hashlib.md5(content).hexdigest()  # torchvision checks the published MD5
        Path(root, filename).write_bytes(content)

    monkeypatch.setattr(data.tv_datasets.utils, "download_url", download_url)
    target = data.fetch_verified("thing.gz", expected=hashlib.md5(content).hexdigest(), cache_subdir="things",
                                 urls=["https://example.org/thing.gz"], what="a thing", how_to_get="")
    assert target.read_bytes() == content and written == [target]
    assert sorted(p.name for p in target.parent.parent.rglob("*")) == ["thing.gz", "things"]  # nothing left over


def test_an_archive_is_extracted_file_by_file_atomically_and_only_inside_its_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import tarfile

    def archive(name: str, members: dict[str, bytes]) -> Path:
        path = tmp_path / name
        with tarfile.open(path, "w:gz") as tar:
            for member, content in members.items():
                info = tarfile.TarInfo(member)
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
        return path

    written = _recording_atomic_writer(monkeypatch)
    root = tmp_path / "CIFAR10"
    members = {"batches/data_batch_1": b"one" * 100, "batches/readme.html": b"<p>"}
    data._extract_tar(archive("good.tar.gz", members), root)
    assert {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()} == members
    assert sorted(written) == sorted(root / m for m in members)
    with pytest.raises(tarfile.FilterError):
        data._extract_tar(archive("evil.tar.gz", {"../outside": b"x"}), root)
    assert not (tmp_path / "outside").exists()
