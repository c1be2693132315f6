"""Fault injection: damage every kind of file advcore writes; kill runs and resume them.

The promises (CONTRIBUTING.md, "Guarantees") this module keeps true:

* every file advcore writes -- dataset copies in the cache, zoo models and manifests,
  training checkpoints, experiment pieces, result JSON and NPZ -- is checked when read:
  truncated, with one bit or one byte flipped, or replaced by another *valid* file of the same kind
  (another entry's, another profile's), it is detected with a clear message and never
  used: the reader raises, or warns and repairs it (and then returns exactly what the
  undamaged file gave), or, for results, warns and reports no result;
* a training run and an experiment killed with SIGKILL at a random point resume, when
  started again, to exactly the result of an uninterrupted run, and leave no temporary
  files behind.

A new kind of file is one more entry in ``FILE_KINDS`` (a function that writes the files
and says how they are read back). Committed weights under ``results/`` join here when
they exist.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from advcore import data, experiments, zoo
from advcore import train as training
from advcore.profiles import current_profile
from advcore.results import load_result, save_result

ROOT = Path(__file__).resolve().parent.parent
needs_mirror = pytest.mark.skipif(not os.environ.get("ADVCORE_DATA"), reason="needs a data mirror (ADVCORE_DATA)")


# =========================================================================== damage


def _rewrite(path: Path, content: bytes) -> None:
    """Replace the file's content through a new inode (templates may be hard links to it)."""
    path.unlink()
    path.write_bytes(content)


def truncate(path: Path, other: Path) -> None:
    content = path.read_bytes()
    _rewrite(path, content[: len(content) // 2])


def flip_a_bit(path: Path, other: Path) -> None:
    """One bit in the middle: a subtle change that often still parses (a digit, a weight)."""
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0x01
    _rewrite(path, bytes(content))


def flip_a_byte(path: Path, other: Path) -> None:
    """All eight bits of one byte in the middle (often no longer valid UTF-8 or JSON)."""
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0xFF
    _rewrite(path, bytes(content))


def replace_with_another_valid_file(path: Path, other: Path) -> None:
    assert other.read_bytes() != path.read_bytes()
    _rewrite(path, other.read_bytes())


DAMAGES = {"truncated": truncate, "bit flipped": flip_a_bit, "byte flipped": flip_a_byte,
           "another valid file": replace_with_another_valid_file}


# =========================================================================== kinds of file


@dataclass
class Case:
    """Files of one kind, written by advcore, and how advcore reads them back.

    Attributes:
        files: label -> (the file, another valid file of the same kind).
        read: the public call that reads the files.
        pristine: what ``read`` returned before any damage.
        same: whether two results of ``read`` are equal.
        raises: the error a damaged file must raise (``(type, regex)``), or ``None`` when the
            reader warns instead (``warns``) and repairs the file.
        repaired: whether a warning reader also rebuilds the file (then a second read is
            clean and equals ``pristine``); ``False``: it reports "no result" (``None``).
    """

    files: dict[str, tuple[Path, Path]]
    read: Callable[[], Any]
    pristine: Any
    same: Callable[[Any, Any], bool]
    raises: tuple[type[BaseException] | tuple[type[BaseException], ...], str] | None = None
    warns: str = ""
    repaired: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def _tensors_equal(a: Any, b: Any) -> bool:
    return all(torch.equal(u, v) for u, v in zip(a, b))


def _state_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(u, v) for u, v in zip(a.state_dict().values(), b.state_dict().values()))


def _link_tree(source: Path, target: Path) -> None:
    """A copy made of hard links: cheap; damage goes through :func:`_rewrite`, never in place."""
    shutil.copytree(source, target, copy_function=os.link)


@pytest.fixture(scope="module")
def mnist_template(tmp_path_factory) -> Path:
    """A cache holding verified MNIST files, made once; tests link it into their own cache."""
    if not os.environ.get("ADVCORE_DATA"):
        pytest.skip("needs a data mirror (ADVCORE_DATA)")
    cache = tmp_path_factory.mktemp("mnist-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(data.CACHE_ENV, str(cache))
        data._ensure_mnist_files()
    return cache


def _private_cache(tmp_path: Path, monkeypatch, mnist_template: Path) -> Path:
    cache = tmp_path / "cache"
    _link_tree(mnist_template, cache)
    monkeypatch.setenv(data.CACHE_ENV, str(cache))
    return cache


def mnist_files(tmp_path: Path, monkeypatch, mnist_template: Path) -> Case:
    """The cache's verified copies of the mirror's MNIST archives and their extracted files."""
    raw = _private_cache(tmp_path, monkeypatch, mnist_template) / "MNIST" / "raw"

    def read():
        data._mnist_tensors.cache_clear()  # the in-memory copy: read the files again
        return data.load_mnist("test", limit=200).tensors

    return Case(
        files={
            "archive": (raw / "t10k-labels-idx1-ubyte.gz", raw / "train-labels-idx1-ubyte.gz"),
            "extracted": (raw / "t10k-labels-idx1-ubyte", raw / "train-labels-idx1-ubyte"),
            "extracted record": (raw / "t10k-labels-idx1-ubyte.verified", raw / "train-labels-idx1-ubyte.verified"),
        },
        read=read, pristine=read(), same=_tensors_equal, warns="corrupted or truncated",
    )


TINY_ZOO = dict(mnist_train=300, mnist_val=100, epochs_linear=2)


@pytest.fixture(scope="module")
def zoo_template(mnist_template, tmp_path_factory) -> Path:
    """Two trained zoo entries of the same architecture (softmax and softmax_fgsm), made once."""
    cache = tmp_path_factory.mktemp("zoo-cache")
    shutil.rmtree(cache)
    _link_tree(mnist_template, cache)
    profile = current_profile("smoke").replace(**TINY_ZOO)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(data.CACHE_ENV, str(cache))
        for name in ("softmax", "softmax_fgsm"):
            zoo.ensure(name, profile=profile)
    return cache


def zoo_entry(tmp_path: Path, monkeypatch, zoo_template: Path) -> Case:
    """A trained zoo entry: its weights, history, recipe and the manifest that checks them."""
    cache = tmp_path / "cache"
    _link_tree(zoo_template, cache)
    monkeypatch.setenv(data.CACHE_ENV, str(cache))
    profile = current_profile("smoke").replace(**TINY_ZOO)
    folder, other = (cache / "zoo" / "smoke" / name for name in ("softmax", "softmax_fgsm"))

    def read():
        return zoo.get("softmax", profile=profile, device="cpu"), zoo.history("softmax", profile=profile)

    def same(a, b):  # retraining is deterministic: a repaired entry has the very same weights
        return _state_equal(a[0], b[0]) and a[1].steps["loss"] == b[1].steps["loss"]

    return Case(files={f: (folder / f, other / f) for f in ("model.pt", "manifest.json", "history.json",
                                                           "recipe.json")},
                read=read, pristine=read(), same=same, warns="is damaged")


def _synthetic(n: int = 128, seed: int = 0) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=generator)
    return TensorDataset(x, (x.mean((1, 2, 3)) * 40).long() % 10)


def _small_model() -> torch.nn.Module:
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(),
                               torch.nn.Dropout(0.2), torch.nn.Linear(32, 10))


def _train_small(checkpoint: Path, *, seed: int = 3, epochs: int = 2) -> tuple[torch.nn.Module, training.History]:
    model = _small_model()
    history = training.train(model, _synthetic(), objective=training.NoiseObjective(eps=0.1), epochs=epochs,
                             batch_size=32, lr=1e-2, seed=seed, checkpoint=checkpoint, progress=False,
                             monitor=training.FGSMAttack(0.1), eval_train_examples=32)
    return model, history


def training_checkpoint(tmp_path: Path, monkeypatch, _template=None) -> Case:
    """The checkpoint of a training run (here of a finished one, which resuming returns as is)."""
    ckpt, other = tmp_path / "run.ckpt", tmp_path / "other.ckpt"
    _train_small(other, seed=4)  # another run's checkpoint: valid, of another configuration
    pristine = _train_small(ckpt)
    return Case(files={"checkpoint": (ckpt, other)}, read=lambda: _train_small(ckpt), pristine=pristine,
                same=lambda a, b: _state_equal(a[0], b[0]),
                raises=((training.CheckpointError, training.CheckpointMismatchError),
                        "truncated|corrupted|not an advcore checkpoint|different training configuration"))


def experiment_piece(tmp_path: Path, monkeypatch, _template=None) -> Case:
    """A finished piece of an experiment in the cache (what an interrupted run resumes from)."""
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path / "cache"))
    profile = current_profile("smoke")

    def piece(seed: int) -> dict[str, Any]:
        def compute():
            generator = torch.Generator().manual_seed(seed)
            return {"losses": torch.rand(64, generator=generator), "n_clusters": seed + 1}
        return experiments._cached("fault-test", {"seed": seed}, compute, profile=profile)

    piece(1)
    pristine = piece(0)
    folder = tmp_path / "cache" / "experiments" / "smoke" / "fault-test"
    path = folder / f"{experiments._digest({'format': experiments.FORMAT, 'seed': 0})}.pt"
    other = folder / f"{experiments._digest({'format': experiments.FORMAT, 'seed': 1})}.pt"
    return Case(files={"piece": (path, other)}, read=lambda: piece(0), pristine=pristine,
                same=lambda a, b: torch.equal(a["losses"], b["losses"]) and a["n_clusters"] == b["n_clusters"],
                warns="damaged cached piece")


def result_files(tmp_path: Path, monkeypatch, _template=None) -> Case:
    """A saved experiment result: the JSON (scalars, provenance) and the NPZ (arrays) it names."""
    root = tmp_path / "results"
    for profile, seed in (("cpu", 1), ("smoke", 0)):
        arrays = np.random.default_rng(seed).random((4, 50)).astype(np.float32)
        save_result("landscape", {"final_losses": arrays, "eps": 0.3, "examples": [3, 5]}, profile=profile,
                    wall_time_s=1.0, root=root)
    (npz,) = (root / "landscape").glob("smoke-*.npz")
    (other_npz,) = (root / "landscape").glob("cpu-*.npz")
    read = lambda: load_result("landscape", profile="smoke", root=root)  # noqa: E731
    return Case(files={"json": (root / "landscape" / "smoke.json", root / "landscape" / "cpu.json"),
                       "npz": (npz, other_npz)},
                read=read, pristine=read(), same=lambda a, b: a is not None and b is not None and np.array_equal(
                    a["final_losses"], b["final_losses"]) and a.data == b.data,
                warns="Ignoring the damaged result", repaired=False)


# kind -> (how to write its files, the fixture that prepares a template, the files' labels)
FILE_KINDS: dict[str, tuple[Callable[..., Case], str | None, tuple[str, ...]]] = {
    "mnist": (mnist_files, "mnist_template", ("archive", "extracted", "extracted record")),
    "zoo": (zoo_entry, "zoo_template", ("model.pt", "manifest.json", "history.json", "recipe.json")),
    "checkpoint": (training_checkpoint, None, ("checkpoint",)),
    "experiment piece": (experiment_piece, None, ("piece",)),
    "result": (result_files, None, ("json", "npz")),
    # Committed weights and manifests of the long runs (results/runs/) are damaged the same ways in
    # tests/test_longrun.py (truncated, flipped, another valid file, an edited manifest).
}


def _cases():
    for kind, (_, template, labels) in FILE_KINDS.items():
        marks = [pytest.mark.slow] if kind == "zoo" else []  # each case retrains an entry
        for label in labels:
            for damage in DAMAGES:
                yield pytest.param(kind, label, damage, id=f"{kind}-{label}-{damage}", marks=marks)


@pytest.mark.parametrize("kind, label, damage", list(_cases()))
def test_damage_is_detected_and_never_used(kind, label, damage, tmp_path, monkeypatch, request) -> None:
    make, template, _ = FILE_KINDS[kind]
    case = make(tmp_path, monkeypatch, request.getfixturevalue(template) if template else None)
    path, other = case.files[label]
    DAMAGES[damage](path, other)
    damaged = path.read_bytes()

    if case.raises is not None:
        error_type, message = case.raises
        with pytest.raises(error_type, match=message):
            case.read()
        assert path.read_bytes() == damaged  # reported, not overwritten: the user decides
        return

    with pytest.warns(UserWarning, match=case.warns) as caught:
        outcome = case.read()
    assert any(str(path.parent) in str(w.message) or path.name in str(w.message) for w in caught), \
        [str(w.message) for w in caught]  # the message names the damaged file or its entry
    if not case.repaired:
        assert outcome is None  # treated as missing: the notebook shows no result, not a wrong one
        return
    assert case.same(outcome, case.pristine)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # repaired for good: the next read is clean
        assert case.same(case.read(), case.pristine)


def test_files_are_readable_by_others_and_orphans_of_killed_writers_go(tmp_path) -> None:
    # Issue 15, item 9: files were created 0600 (a class-shared cache was unreadable), and a
    # writer killed mid-write left its temporary file forever.
    target = tmp_path / "run.ckpt"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = tmp_path / f".run.ckpt.{dead.pid}.abc123.tmp"
    orphan.write_bytes(b"half a checkpoint")
    old_style = tmp_path / ".run.ckpt.k2j4h5.tmp"  # written before temporary names held the pid
    old_style.write_bytes(b"half a checkpoint")
    os.utime(old_style, (time.time() - 2 * 86400,) * 2)
    live = tmp_path / f".run.ckpt.{os.getppid()}.xyz789.tmp"  # a writer that still runs: left alone
    live.write_bytes(b"in progress")
    training.save_checkpoint(target, {"epoch": 1})
    assert not orphan.exists() and not old_style.exists() and live.exists()
    umask = os.umask(0o022)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


# =========================================================================== killed runs


@pytest.fixture(scope="module")
def forkserver():
    """Processes forked from a server that imported torch and advcore once: each run starts in
    a fraction of a second (a fresh interpreter spends seconds importing torch), and is a real
    process that SIGKILL ends without any cleanup."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["torch", "advcore.train", "advcore.experiments", "fault_children"])
    return context


def _finish(context, target, *args, out: Path) -> dict[str, Any]:
    """Run ``target(*args, out)`` to the end in a child; return the JSON it wrote to ``out``."""
    process = context.Process(target=target, args=(*args, str(out)))
    process.start()
    process.join(timeout=300)
    assert process.exitcode == 0, f"{target.__name__} failed with exit code {process.exitcode}"
    return json.loads(out.read_text())


def _kill(context, target, *args, after_s: float, once: Callable[[], bool] | None = None) -> None:
    """Start ``target(*args, out)`` in a child and SIGKILL it ``after_s`` seconds later, counted
    from when ``once()`` first holds if given (polled; a busy machine stretches a run, so a kill
    timed from its start alone can land before or after all of it)."""
    process = context.Process(target=target, args=(*args, os.devnull))
    process.start()
    deadline = time.monotonic() + 120
    while once is not None and not once() and process.is_alive() and time.monotonic() < deadline:
        time.sleep(0.002)
    time.sleep(after_s)
    process.kill()  # SIGKILL: no handler, no finally block, no flush
    process.join(timeout=60)


@pytest.mark.slow
def test_a_killed_training_run_resumes_to_the_uninterrupted_result(tmp_path, forkserver) -> None:
    from fault_children import EPOCHS, training_run

    reference = _finish(forkserver, training_run, None, out=tmp_path / "reference.json")
    print(f"training run: {reference['seconds']:.2f} s")
    rng, killed_after = random.Random(15), []
    for trial in range(3):
        ckpt = tmp_path / f"run{trial}.ckpt"
        if trial < 2:  # at any instant of the run
            _kill(forkserver, training_run, str(ckpt), after_s=rng.uniform(0.1, 0.9) * reference["seconds"])
        else:  # within an epoch after the first checkpoint
            _kill(forkserver, training_run, str(ckpt), once=ckpt.exists,
                  after_s=rng.uniform(0, 1) * reference["seconds"] / EPOCHS)
        killed_after.append(training.load_checkpoint(ckpt)["epoch"] if ckpt.exists() else 0)
        resumed = _finish(forkserver, training_run, str(ckpt), out=tmp_path / f"resumed{trial}.json")
        assert resumed["weights"] == reference["weights"], f"trial {trial}"
        assert resumed["steps"] == reference["steps"] and resumed["epochs"] == reference["epochs"]
    assert not list(tmp_path.glob(".*.tmp"))  # temporary files of killed writers are gone
    assert any(0 < epoch < EPOCHS for epoch in killed_after), killed_after  # some kills landed mid-run


@pytest.mark.slow
def test_a_killed_experiment_resumes_to_the_uninterrupted_result(tmp_path, forkserver) -> None:
    from fault_children import PIECES, experiment_run

    timing = _finish(forkserver, experiment_run, str(tmp_path / "reference"), str(tmp_path / "cache"),
                     out=tmp_path / "reference-run.json")
    reference = load_result("kill-test", profile="smoke", root=tmp_path / "reference")
    assert timing["code"] == 0 and reference is not None and reference["count"] == PIECES
    rng, killed_after = random.Random(15), []
    for trial in range(3):
        root, cache = tmp_path / f"results{trial}", tmp_path / f"cache{trial}"
        pieces = cache / "experiments" / "smoke" / "kill-test"
        if trial < 2:  # at any instant of the run
            _kill(forkserver, experiment_run, str(root), str(cache), after_s=rng.uniform(0.05, 1.0) * timing["seconds"])
        else:  # within a piece after half of them are cached
            _kill(forkserver, experiment_run, str(root), str(cache),
                  once=lambda: len(list(pieces.glob("*.pt"))) >= PIECES // 2,
                  after_s=rng.uniform(0, 1) * timing["seconds"] / PIECES)
        killed_after.append(len(list(pieces.glob("*.pt"))))
        partial = load_result("kill-test", profile="smoke", root=root)  # none, or a complete one
        assert partial is None or np.array_equal(partial["values"], reference["values"])
        _finish(forkserver, experiment_run, str(root), str(cache), out=tmp_path / f"resumed{trial}.json")
        resumed = load_result("kill-test", profile="smoke", root=root)
        np.testing.assert_array_equal(resumed["values"], reference["values"])
        assert len(list(pieces.glob("*.pt"))) == PIECES
        assert not list(pieces.glob(".*.tmp")) and not list((root / "kill-test").glob(".*.tmp"))
    assert any(0 < count < PIECES for count in killed_after), killed_after  # some kills landed mid-run
