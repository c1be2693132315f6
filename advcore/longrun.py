"""Long training runs made in pieces, each piece committed to git as it finishes.

A paper-scale run (Madry et al.'s PGD training of the MNIST CNN: 100k steps of batch 50,
about 91 epochs) takes many hours on a CPU, far longer than a build machine lives. So it is
cut into pieces of a few epochs; after each piece the small state a resume needs is written
under ``results/runs/<run>/`` and committed, and the next piece -- on any machine, after
any interruption -- continues from the committed files::

    python -m advcore.longrun status  cnn_pgd           # how far the committed run is
    python -m advcore.longrun piece   cnn_pgd --epochs 2   # train the next 2 epochs, write them
    python -m advcore.longrun landscape cnn_pgd --image 0 --block 3   # 10^4 more restarts of image 0

A run is a zoo recipe at a profile (``advcore.zoo.profile_recipe(name, profile=...)``): the same
recipe trains the same way here and in the zoo (:func:`advcore.zoo.training_options`).

What is committed per run (small: no optimizer state, weights in float16):

* ``run.json`` -- the recipe and its key, one entry per finished piece (epochs, wall and CPU
  time, commit, device, threads), every file's SHA-256, and notes on each resume;
* ``model-<sha256[:12]>.pt`` -- the latest weights in float16 (a few MB);
* ``resume-<sha256[:12]>.pt`` -- the random-number states and counters of :func:`advcore.train.train`'s
  checkpoint (kilobytes);
* ``history-<NNN>.npz`` -- each piece's per-step records and per-epoch evaluations.

A model too large to commit (``Run.commits_weights`` false: the 1600-unit maxout network) is
trained whole in one piece and commits, instead of weights, what its chapters measure at the
end (``measurements-<sha256[:12]>.npz``: per-example test predictions, clean and attacked, and
the transfer matrix with committed partner models; :func:`measurements`).

How exact a resume is: within one machine, the full training checkpoint (with Adam's
moments) is kept in ``ADVCORE_CACHE`` and the next piece continues from it bit for bit.
When that cache is gone (a new machine), the next piece starts from the committed state:
the same weights rounded to float16, the same random-number streams, and a *fresh optimizer*
(Adam's moments are ~26 MB for the CNN: too big to commit per piece). ``run.json`` records
every such resume, and chapters that show the run say so.

Every committed file is checked against its SHA-256 before use; a damaged or foreign file
raises :class:`LongRunError` instead of being used. Files are written atomically, under
names that carry their content's hash, weights and history first and ``run.json`` last; the
previous piece's files are removed only after that, so an interrupted piece leaves the
previous complete state.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from advcore import data, storage, zoo
from advcore.attacks import AttackSpec, pgd_step_size
from advcore.papers import MADRY_EPS, MADRY_STEP
from advcore import train as training
from advcore.profiles import current_profile
from advcore.results import Result, downloads_committed, fetch_committed, provenance, results_dir

if TYPE_CHECKING:
    from advcore.evaluate import EvalResult, TransferResult

__all__ = [
    "EVALUATIONS", "LANDSCAPE", "LongRunError", "Measurements", "RUNS", "Run", "evaluate_run", "history",
    "landscape_piece", "landscape_result", "load_evaluations", "load_landscape", "load_state", "load_weights",
    "main", "measurements", "recipe", "run_dir", "run_piece",
]

FORMAT = 1


class LongRunError(RuntimeError):
    """A committed long-run file is missing, damaged or belongs to another recipe."""


@dataclass(frozen=True)
class Run:
    """A long run: zoo entry ``zoo_name`` trained with ``profile``'s (paper-scale) recipe."""

    zoo_name: str
    profile: str = "gpu"
    precision: str | None = None  # None: float32 (bfloat16 pays only with AVX-512 BF16/AMX or on CUDA)
    # The zoo entry the finished run replaces (None: its own, zoo_name): a run of another recipe
    # can stand in for an entry the chapters use (cnn_pgd_fast for cnn_pgd). A run that replaces an
    # entry is registered in RUNS under its zoo_name.
    zoo_entry: str | None = None
    # The profiles at which the finished run replaces its entry (None: every profile that uses
    # committed runs). A stand-in of a shorter recipe replaces the entry at the cpu profile only:
    # the gpu profile's own recipe is the paper's, which a GPU can afford.
    profiles_replaced: tuple[str, ...] | None = None
    # The epochs this run trains instead of the profile's (None: the profile's): what a CPU
    # affords where the profile's count does not fit (part of the recipe, hence of the key).
    epochs: int | None = None
    # False for a model too large to commit (the 1600-unit maxout: 19 M parameters, 38 MB in
    # float16, ~150 MB as a checkpoint with momentum): it is trained whole in one piece and
    # commits what its chapters measure at the end instead of its weights (:func:`measurements`).
    commits_weights: bool = True
    # Committed runs whose models the end-of-run transfer matrix pairs with this one's (only
    # for a run that does not commit its weights: nothing can pair with it later).
    transfer_partners: tuple[str, ...] = ()


#: The committed long runs (run name -> what it trains). The paper-scale recipes are the zoo's
#: ``gpu`` profile: Madry et al.'s schedule for the CNN (PGD 40 x 0.01 at eps 0.3, Adam 1e-4,
#: batch 50, 91 epochs over 55,000 images, 5,000 held out).
RUNS: dict[str, Run] = {
    "cnn": Run("cnn"),
    "cnn_pgd": Run("cnn_pgd"),
    # What a CPU can afford (Madry et al.'s schedule is ~90 CPU hours here): PGD-40 training after
    # a warm start of one-step FGSM training (Wong et al. 2020); see advcore.zoo._cnn_fast_start.
    "cnn_pgd_fast": Run("cnn_pgd_fast", zoo_entry="cnn_pgd", profiles_replaced=("cpu",)),
    # Part I (Goodfellow et al. 2015): the maxout networks' paper-scale recipe (the gpu profile's:
    # SGD with momentum, max-norm, dropout, 200 epochs; see advcore.zoo._maxout), softmax regression
    # and the sigmoid / ReLU networks of the hidden-layer experiment (Adam, 55,000 images).
    **{name: Run(name) for name in ("maxout", "maxout_fgsm", "maxout_seed1", "maxout_noise_sign", "maxout_noise",
                                    "maxout_rotation", "maxout_scaledgrad", "softmax", "softmax_fgsm",
                                    "sigmoid_mlp", "sigmoid_mlp_hidden", "relu_mlp", "relu_mlp_hidden")},
    # Goodfellow et al.'s 1600-unit FGSM-trained network: 5.75 CPU minutes per epoch here (one AVX2
    # core, measured), so the profile's 100 epochs cannot be one piece of well under 90 minutes; 12 can.
    "maxout1600_fgsm_es": Run("maxout1600_fgsm_es", epochs=12, commits_weights=False,
                              transfer_partners=("maxout", "maxout_fgsm")),
}

#: Why a run's epochs differ from its profile's (appended to the recipe's note).
_EPOCHS_NOTE = (" This run: {epochs} epochs instead of the {profile} profile's {profile_epochs} (learning-rate "
                "steps at the same fractions), what one CPU run affords.")
_STOPPING_NOTE = (" The epoch with the lowest adversarial validation error is kept (the profile's patience of "
                  "{patience} epochs never runs out in {epochs}); Goodfellow et al. stopped early on the "
                  "adversarial validation error and then retrained on all 60,000 images, which we do not.")


def run_dir(name: str, *, root: str | Path | None = None) -> Path:
    """``results/runs/<name>``: where run ``name``'s committed pieces live.

    Without a checkout (``pip install``, e.g. Colab) the default is a copy of the repository's
    committed files downloaded into the cache (see :func:`load_state`).
    """
    _run(name)
    if root is None and downloads_committed():
        return data.cache_dir() / "results" / "runs" / name
    return (Path(root) if root is not None else results_dir()) / "runs" / name


_FETCHED: set[str] = set()


def _fetch_run(name: str) -> None:
    """Bring the cached copy of run ``name`` up to the repository's committed state (once per process).

    Only a *finished* run is copied (the zoo loads nothing else): ``run.json`` is downloaded
    beside the cached one, then every file it lists that is missing or whose SHA-256 differs,
    and only then does it replace the cached ``run.json``, so the cache always holds one
    consistent state (offline, or after a failed download, the previous one is kept).
    """
    if name in _FETCHED:
        return
    _FETCHED.add(name)
    folder = run_dir(name)
    fresh = fetch_committed(f"runs/{name}/run.json", target=folder / "run.json.download")
    if fresh is None:
        return
    try:
        state = json.loads(fresh.read_text())
        files, finished = dict(state["files"]), state["epochs_done"] >= state["epochs_total"]
    except (OSError, ValueError, KeyError, TypeError):
        finished = False
    for filename, expected in (files.items() if finished else ()):
        path = folder / filename
        if not (path.is_file() and _sha256(path.read_bytes()) == expected) and (
                fetch_committed(f"runs/{name}/{filename}") is None):
            finished = False
            break
    if finished:
        fresh.replace(folder / "run.json")
    else:
        fresh.unlink(missing_ok=True)


def _run(name: str) -> Run:
    if name not in RUNS:
        raise KeyError(f"No long run named {name!r}; choose one of {', '.join(RUNS)}.")
    return RUNS[name]


def _recipe_and_key(name: str) -> tuple[zoo.Recipe, str]:
    """The run's recipe and its key: everything that changes the training, not the recipe's prose note.

    Unlike the zoo's cache key, the key leaves out ``note`` (a wording fix must not orphan hours
    of committed training) and the zoo's cache format (committed runs have their own, ``FORMAT``).
    """
    run = _run(name)
    rec = zoo.profile_recipe(run.zoo_name, profile=run.profile)
    if run.epochs is not None:
        note = _EPOCHS_NOTE + (_STOPPING_NOTE if rec.early_stopping else "")
        rec = dataclasses.replace(rec, epochs=run.epochs, note=rec.note + note.format(
            epochs=run.epochs, profile=run.profile, profile_epochs=rec.epochs, patience=rec.patience))
    payload = {"format": FORMAT, "profile": run.profile, "precision": run.precision,
               "recipe": {k: v for k, v in rec.to_dict().items() if k != "note"}}
    return rec, storage.json_digest(payload)


def recipe(name: str) -> zoo.Recipe:
    """The recipe run ``name`` trains (its profile's zoo recipe, with the run's own epochs if it has them)."""
    return _recipe_and_key(name)[0]


def _sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def _read_verified(folder: Path, filename: str, manifest: dict[str, Any], *, listed_in: str = "run.json") -> bytes:
    """The bytes of ``folder/filename``, checked against the SHA-256 that ``manifest["files"]`` (read
    from ``listed_in``) records for it."""
    expected = manifest.get("files", {}).get(filename)
    path = folder / filename
    if expected is None or not path.is_file():
        raise LongRunError(f"{path} is missing ({listed_in} lists {sorted(manifest.get('files', {}))}); "
                           "check out the committed results/ again or delete the run folder to start afresh.")
    content = path.read_bytes()
    if _sha256(content) != expected:
        raise LongRunError(f"{path} is damaged: its SHA-256 differs from {listed_in}'s. Restore it with "
                           f"`git checkout -- {path}`; it is not used.")
    return content


def load_state(name: str, *, root: str | Path | None = None) -> dict[str, Any] | None:
    """The committed ``run.json`` of run ``name`` (verified), or ``None`` before the first piece.

    Raises:
        LongRunError: the run folder belongs to another recipe or a file is damaged.
    """
    if root is None and downloads_committed():
        _fetch_run(name)
    folder = run_dir(name, root=root)
    path = folder / "run.json"
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
        storage.check_seal(manifest, known=_MANIFEST_FIELDS, what=str(path))
        if manifest.get("format") != FORMAT:
            raise ValueError("not a long-run manifest of this format")
    except ValueError as error:
        raise LongRunError(f"{path} is unreadable ({error}); restore it from git.") from error
    _, key = _recipe_and_key(name)
    if manifest.get("key") != key:
        raise LongRunError(
            f"{folder} holds a run of another recipe (key {str(manifest.get('key'))[:12]}, the code's "
            f"recipe has {key[:12]}); the recipe changed since it was committed. Move the folder away "
            "to start the new recipe, or check out the commit that made it."
        )
    for filename in manifest["files"]:
        _read_verified(folder, filename, manifest)
    return manifest


def load_weights(name: str, *, root: str | Path | None = None, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The committed model of run ``name`` (float16 weights, verified, loaded without unpickling code).

    Raises:
        LongRunError: nothing committed yet, or a damaged file.
    """
    if not _run(name).commits_weights:
        raise LongRunError(f"Run {name!r} does not commit its weights (too large); what it measured at its end "
                           f"is in `advcore.longrun.measurements({name!r})`.")
    manifest = load_state(name, root=root)
    if manifest is None:
        raise LongRunError(f"Run {name!r} has no committed piece yet: `python -m advcore.longrun piece {name}`.")
    rec, _ = _recipe_and_key(name)
    content = _read_verified(run_dir(name, root=root), _weights_file(manifest), manifest)
    state = torch.load(io.BytesIO(content), map_location="cpu", weights_only=True)
    model = zoo.build_model(rec)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return model.to(device).eval()


def _cache_checkpoint(name: str, key: str) -> Path:
    return data.cache_dir() / "longrun" / name / f"training-{key[:16]}.ckpt"


def _rebuild_checkpoint(name: str, manifest: dict[str, Any], path: Path, *, root: str | Path | None) -> None:
    """A training checkpoint from the committed files: no optimizer state (see the module docstring)."""
    folder = run_dir(name, root=root)
    resume = torch.load(io.BytesIO(_read_verified(folder, manifest.get("resume", "resume.pt"), manifest)),
                        weights_only=True)
    weights = torch.load(io.BytesIO(_read_verified(folder, _weights_file(manifest), manifest)), weights_only=True)
    histories = [training.History.from_dict(_history_from_npz(_read_verified(folder, piece["history"], manifest)))
                 for piece in manifest["pieces"]]
    history = histories[0]
    for later in histories[1:]:
        for table, more in ((history.steps, later.steps), (history.epochs, later.epochs)):
            for column, values in more.items():
                table[column].extend(values)
    training.save_checkpoint(path, {
        **resume, "config_key": None, "model": {k: v.float() if v.is_floating_point() else v for k, v in weights.items()},
        "optimizer": None, "best_model": None, "history": {**history.to_dict(), "config": resume["config"]},
    })


def _history_npz(history: training.History, first_epoch: int) -> bytes:
    """The per-step and per-epoch records of epochs after ``first_epoch``, as a float32 NPZ."""
    steps = [i for i, epoch in enumerate(history.steps["epoch"]) if epoch > first_epoch]
    epochs = [i for i, epoch in enumerate(history.epochs["epoch"]) if epoch > first_epoch]
    arrays = {f"steps.{k}": np.asarray([v[i] for i in steps], dtype=np.float32) for k, v in history.steps.items()}
    arrays.update({f"epochs.{k}": np.asarray([v[i] for i in epochs], dtype=np.float64)
                   for k, v in history.epochs.items()})
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def _history_from_npz(content: bytes) -> dict[str, Any]:
    with np.load(io.BytesIO(content), allow_pickle=False) as arrays:
        table = {name: arrays[name].tolist() for name in arrays.files}
    return {"steps": {k[6:]: v for k, v in table.items() if k.startswith("steps.")},
            "epochs": {k[7:]: v for k, v in table.items() if k.startswith("epochs.")}, "config": {}}


def history(name: str, *, root: str | Path | None = None) -> training.History:
    """The committed run's whole training history (all pieces, in order)."""
    manifest = load_state(name, root=root)
    if manifest is None:
        raise LongRunError(f"Run {name!r} has no committed piece yet.")
    folder = run_dir(name, root=root)
    result = training.History()
    for piece in manifest["pieces"]:
        part = _history_from_npz(_read_verified(folder, piece["history"], manifest))
        for table, more in ((result.steps, part["steps"]), (result.epochs, part["epochs"])):
            for column, values in more.items():
                table[column].extend(values)
    result.config = manifest.get("train_config", {})
    result.best_epoch = manifest.get("final", {}).get("best_epoch")
    return result


def run_piece(name: str, *, epochs: int, root: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Train run ``name`` for up to ``epochs`` more epochs and write the piece; return its entry.

    Continues from the local full checkpoint when it holds exactly the committed
    state (exact), else from the committed files (fresh optimizer; recorded). Returns the
    piece's entry of ``run.json`` (``{"finished": True}`` alone when the run was complete).
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a whole number >= 1, got {epochs!r}.")
    run = _run(name)
    rec, key = _recipe_and_key(name)
    if rec.early_stopping and run.commits_weights:
        raise ValueError(f"Run {name!r} uses early stopping, whose best weights are not committed per piece.")
    folder = run_dir(name, root=root)
    manifest = load_state(name, root=root)
    done = 0 if manifest is None else manifest["epochs_done"]
    if done >= rec.epochs:
        return {"finished": True}
    if not run.commits_weights and epochs < rec.epochs:
        raise ValueError(f"Run {name!r} does not commit its weights (too large), so it cannot resume from git: "
                         f"train it whole in one piece, `--epochs {rec.epochs}`.")
    for partner in run.transfer_partners:  # checked now, not after hours of training
        state = load_state(partner, root=root)
        if state is None or state["epochs_done"] < state["epochs_total"]:
            raise LongRunError(f"Run {name!r} measures transfer with run {partner!r}, which is not finished: "
                               f"train {partner!r} first (`python -m advcore.longrun status {partner}`).")
    checkpoint = _cache_checkpoint(name, key)
    notes = [] if manifest is None else list(manifest.get("notes", []))
    if manifest is None and not run.commits_weights and checkpoint.exists():
        # Only this machine's interrupted attempt can be continued: train() resumes it exactly.
        notes.append(f"epoch {training.load_checkpoint(checkpoint)['epoch']}: continued this machine's "
                     "interrupted attempt from its local checkpoint")
    elif manifest is None:
        checkpoint.unlink(missing_ok=True)  # nothing committed: start from the recipe's seed
    elif _local_checkpoint_matches(checkpoint, done, folder, manifest):
        _vouch_for(checkpoint)
    else:
        _rebuild_checkpoint(name, manifest, checkpoint, root=root)
        notes.append(f"epoch {done}: resumed from the committed float16 weights with a fresh optimizer "
                     f"(no local checkpoint at that epoch)")
    prof = current_profile(run.profile)
    train_set, options = zoo.training_options(rec, prof)
    until = min(done + epochs, rec.epochs)
    started, cpu_started = time.perf_counter(), time.process_time()
    history_ = training.train(zoo.initial_model(rec), train_set, **options, checkpoint=checkpoint, until_epoch=until,
                              precision=run.precision, progress=progress,
                              description=f"longrun {name} epochs {done + 1}-{until} of {rec.epochs}")
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    final, measured = None, {}
    if until == rec.epochs:
        final, measured = _final_test(name, rec, checkpoint, best_epoch=history_.best_epoch, root=root,
                                      progress=progress)
    return _write_piece(name, folder, rec, key, manifest, checkpoint, history_, done, until, wall, cpu, notes,
                        final=final, extra_files=measured)


def _final_test(name: str, rec: zoo.Recipe, checkpoint: Path, *, best_epoch: int | None,
                root: str | Path | None, progress: bool) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The finished model's errors on the whole MNIST test set (10,000 images), clean and under its monitor attack.

    Measured once, on the float16-rounded weights that are committed (what the chapters load),
    so a chapter's re-evaluation of any subset can be checked against it. For a run that does
    not commit its weights, on its float32 weights (the best epoch's with early stopping), with
    everything its chapters need (:func:`measurements`) in a file beside ``run.json``; returns
    ``(summary for run.json, {file name: content})``.
    """
    from advcore.evaluate import evaluate, transfer_matrix

    run = _run(name)
    state = training.load_checkpoint(checkpoint)
    weights = state["best_model"] if rec.early_stopping and state.get("best_model") is not None else state["model"]
    model = zoo.build_model(rec)
    model.load_state_dict({k: v.half().float() if v.is_floating_point() and run.commits_weights else v
                           for k, v in weights.items()})
    model.eval()
    test = data.load_mnist("test")
    attack = zoo.monitor_attack(rec.monitor)
    clean = evaluate(model, test, progress=progress)
    attacked = evaluate(model, test, attack=attack, progress=progress)
    summary = {"test_examples": clean.n, "clean_error": clean.error_rate, "attack": attack.describe(),
               "attack_error": attacked.error_rate, "attack_confidence": attacked.mean_confidence,
               "attack_confidence_misclassified": attacked.mean_confidence_misclassified}
    if run.commits_weights:
        return summary, {}
    partners = {partner: load_weights(partner, root=root) for partner in run.transfer_partners}
    transfer = transfer_matrix({**partners, name: model}, test, attack=attack, progress=progress)
    content = _measurements_npz(clean, attacked, transfer)
    filename = f"measurements-{_sha256(content)[:12]}.npz"
    summary.update(measurements=filename, best_epoch=best_epoch, transfer_partners={
        partner: _committed_weights_sha(partner, root=root) for partner in run.transfer_partners})
    return summary, {filename: content}


def _weights_sha256(state: dict[str, Any]) -> str:
    """The SHA-256 of the weights a run's ``run.json`` (``state``) names."""
    return state["files"][_weights_file(state)]


def _committed_weights_sha(name: str, *, root: str | Path | None = None) -> str | None:
    """The SHA-256 of run ``name``'s committed weights (``None`` before its first piece)."""
    state = load_state(name, root=root)
    return None if state is None else _weights_sha256(state)


def _measurements_npz(clean: EvalResult, attacked: EvalResult, transfer: TransferResult) -> bytes:
    """Per-example predictions of the clean and attacked test images and the transfer tables, as an NPZ."""
    arrays: dict[str, np.ndarray] = {}
    for what, result in (("clean", clean), ("attacked", attacked)):
        arrays[f"{what}.predictions"] = result.predictions.numpy().astype(np.int64)
        arrays[f"{what}.confidences"] = result.confidences.numpy().astype(np.float32)
        arrays[f"{what}.labels"] = result.labels.numpy().astype(np.int64)
    for table in ("error", "wrong_label_agreement", "both_wrong"):
        arrays[f"transfer.{table}"] = getattr(transfer, table).to_numpy(dtype=np.float64)
    arrays["transfer.clean_error"] = transfer.clean_error.to_numpy(dtype=np.float64)
    arrays["transfer.names"] = np.asarray(list(transfer.error.index), dtype=str)
    arrays["transfer.n"] = np.asarray(transfer.n, dtype=np.int64)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


@dataclass(frozen=True)
class Measurements:
    """What a run that does not commit its weights measured at its end, on the 10,000 MNIST test images.

    ``clean`` and ``attacked`` (its monitor attack, e.g. FGSM at eps 0.25) are what
    :func:`advcore.evaluate.evaluate` returned; ``transfer`` is
    :func:`advcore.evaluate.transfer_matrix` with the committed models of ``Run.transfer_partners``
    (rows and columns named by run).
    """

    clean: EvalResult
    attacked: EvalResult
    transfer: TransferResult
    attack: str


def measurements(name: str, *, root: str | Path | None = None) -> Measurements:
    """The end-of-run measurements of finished run ``name`` (verified).

    Raises:
        LongRunError: the run is unfinished or commits weights instead, a file is damaged, or
            a transfer partner's committed weights are no longer those it was measured with.
    """
    import pandas as pd

    from advcore.evaluate import EvalResult, TransferResult

    state = load_state(name, root=root)
    final = (state or {}).get("final", {})
    if "measurements" not in final:
        raise LongRunError(f"Run {name!r} has no committed measurements: train it whole with "
                           f"`python -m advcore.longrun piece {name} --epochs {recipe(name).epochs}`.")
    for partner, sha in final["transfer_partners"].items():
        if _committed_weights_sha(partner, root=root) != sha:
            raise LongRunError(f"Run {name!r}'s transfer matrix was measured with other weights of {partner!r} "
                               f"than the committed ones; train {name!r} again (move results/runs/{name} away).")
    content = _read_verified(run_dir(name, root=root), final["measurements"], state)
    with np.load(io.BytesIO(content), allow_pickle=False) as arrays:
        table = {key: arrays[key] for key in arrays.files}
    results = {what: EvalResult.from_predictions(*(torch.from_numpy(table[f"{what}.{column}"])
                                                   for column in ("predictions", "confidences", "labels")))
               for what in ("clean", "attacked")}
    names = [str(value) for value in table["transfer.names"]]
    frame = lambda values: pd.DataFrame(values, index=pd.Index(names, name="source"),  # noqa: E731
                                        columns=pd.Index(names, name="target"))
    transfer = TransferResult(
        error=frame(table["transfer.error"]), wrong_label_agreement=frame(table["transfer.wrong_label_agreement"]),
        both_wrong=frame(table["transfer.both_wrong"]),
        clean_error=pd.Series(table["transfer.clean_error"], index=names, name="clean error"),
        n=int(table["transfer.n"]))
    return Measurements(clean=results["clean"], attacked=results["attacked"], transfer=transfer, attack=final["attack"])


def _vouch_for(path: Path) -> None:
    """Mark a local checkpoint of the committed state as checked here (``config_key`` None).

    ``train`` compares a checkpoint's configuration key with its own; that key covers details
    (e.g. the model's printed structure) that may change with the code between pieces, while
    this module has already matched the run's recipe key, which is what must not change.
    """
    state = training.load_checkpoint(path)
    if state.get("config_key") is not None:
        training.save_checkpoint(path, {**state, "config_key": None})


def _local_checkpoint_matches(path: Path, epoch: int, folder: Path, manifest: dict[str, Any]) -> bool:
    """Whether the cache's full checkpoint is the committed state (same epoch, same weights)."""
    if not path.exists():
        return False
    try:
        state = training.load_checkpoint(path)
    except (training.CheckpointError, RuntimeError):
        return False  # damaged: never used; the committed state takes over
    if state.get("epoch") != epoch:
        return False
    committed = torch.load(io.BytesIO(_read_verified(folder, _weights_file(manifest), manifest)), weights_only=True)
    return all(torch.equal(value.half() if value.is_floating_point() else value, committed[name])
               for name, value in state["model"].items())


def _write_piece(name: str, folder: Path, rec: zoo.Recipe, key: str, manifest: dict[str, Any] | None,
                 checkpoint: Path, history_: training.History, done: int, until: int, wall: float, cpu: float,
                 notes: list[str], *, final: dict[str, Any] | None = None,
                 extra_files: dict[str, bytes] | None = None) -> dict[str, Any]:
    state = training.load_checkpoint(checkpoint)
    index = 0 if manifest is None else len(manifest["pieces"])
    files = {f"history-{index:03d}.npz": _history_npz(history_, done), **(extra_files or {})}
    pointers: dict[str, str] = {}
    if _run(name).commits_weights:
        weights = {k: v.half() if v.is_floating_point() else v for k, v in state["model"].items()}
        resume = {k: v for k, v in state.items() if k not in ("model", "optimizer", "best_model", "history")}
        resume["config"] = state["history"]["config"]
        weights_bytes, resume_bytes = _saved(weights), _saved(resume)
        # New names for new content: until run.json is replaced, the previous piece's files stay as they were.
        pointers = {"weights": f"model-{_sha256(weights_bytes)[:12]}.pt",
                    "resume": f"resume-{_sha256(resume_bytes)[:12]}.pt"}
        files.update({pointers["weights"]: weights_bytes, pointers["resume"]: resume_bytes})
    for filename, content in files.items():
        storage.atomic_write_bytes(folder / filename, content)
    piece = {
        "index": index, "epochs": [done + 1, until], "history": f"history-{index:03d}.npz",
        "wall_time_s": round(wall, 1), "cpu_time_s": round(cpu, 1), "threads": torch.get_num_threads(),
        **{k: v for k, v in provenance(profile=_run(name).profile, wall_time_s=wall).items()
           if k in ("device", "torch", "git_commit", "created_utc", "command")},
        "last_epoch": {k: v[-1] for k, v in history_.epochs.items() if v},
    }
    previous = {} if manifest is None else manifest
    stale = {_weights_file(previous), previous.get("resume", "resume.pt")} - set(files) if previous else set()
    all_files = {**{f: d for f, d in previous.get("files", {}).items() if f not in stale},
                 **{f: _sha256(c) for f, c in files.items()}}
    new_manifest = {
        "format": FORMAT, "name": name, "zoo_name": rec.name, "profile": _run(name).profile, "key": key,
        "recipe": rec.to_dict(), "precision": _run(name).precision, "epochs_total": rec.epochs,
        "epochs_done": until, "pieces": [*previous.get("pieces", []), piece], "files": all_files,
        "notes": notes, "train_config": state["history"]["config"], **pointers,
        **({"final": final} if final is not None else {}),
    }
    storage.atomic_write_bytes(folder / "run.json", json.dumps(storage.seal(new_manifest), indent=1).encode())
    for filename in stale:  # replaced: run.json no longer names them
        (folder / filename).unlink(missing_ok=True)
    return piece


#: The fields of run.json (an unknown one means it was edited or damaged).
_MANIFEST_FIELDS = {"format", "name", "zoo_name", "profile", "key", "recipe", "precision", "epochs_total",
                    "epochs_done", "pieces", "files", "notes", "train_config", "weights", "resume", "final"}


def _weights_file(manifest: dict[str, Any]) -> str:
    """The committed weights' file name (``model.pt`` in runs written before names carried a hash)."""
    return manifest.get("weights", "model.pt")


def _saved(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


# =========================================================================== the landscape in pieces

#: Madry et al.'s landscape experiment (ICLR 2018, Appendix A, Fig. 4): PGD from 10^5
#: uniformly random starts in the eps-ball, per example, until the loss plateaus. Their Fig. 3
#: plots 100 iterations (of 0.01, their training step); 100 x 10^5 x 2 models is more than the
#: CPU budget, so 40 steps with the library's step rule (pgd_step_size: 2.5 eps / 40 = 0.01875,
#: as the cpu profile's live run), which travels 0.75 where 100 steps of 0.01 travel 1.0 and
#: 40 of 0.01 only 0.4. 10^4 restarts per piece: about 4.5 minutes of one AVX-512 core (measured:
#: 45 CPU min for 10^5 x 40 on one image, float32).
LANDSCAPE: dict[str, Any] = {
    "eps": MADRY_EPS, "step_size": pgd_step_size(MADRY_EPS, 40), "steps": 40, "restarts": 100_000, "block": 10_000,
    "images": 5, "traced": 20, "seed": 0,
}


def _landscape_dir(model_run: str, root: str | Path | None) -> Path:
    return run_dir(model_run, root=root) / "landscape"


def landscape_piece(model_run: str, *, image: int, block: int, root: str | Path | None = None,
                    settings: dict[str, Any] | None = None, progress: bool = True) -> dict[str, Any]:
    """Restarts ``[block * B, (block + 1) * B)`` of MNIST test image ``image`` on run ``model_run``'s model.

    Each piece draws its starts from its own seed (``settings["seed"]``, image, block), so the
    pieces can be made in any order, on any machine, and together are ``settings["restarts"]``
    independent uniform starts. Block 0 also traces the loss of its first ``traced`` restarts
    at every iterate. Writes ``landscape/img<k>-block<b>.npz`` (final losses and predictions)
    and its record ``img<k>-block<b>.json`` (settings, model, SHA-256, provenance): no file is
    shared between pieces, so pieces made in parallel (two worktrees, two machines) merge in git
    without conflict. Returns the piece's entry of the record.
    """
    from advcore.landscape import pgd_landscape

    settings = {**LANDSCAPE, **(settings or {})}
    blocks = -(-settings["restarts"] // settings["block"])
    if not (0 <= image < settings["images"]) or not (0 <= block < blocks):
        raise ValueError(f"image must be in [0, {settings['images']}) and block in [0, {blocks}), got {image}, {block}.")
    folder = _landscape_dir(model_run, root)
    model_record = {"run": model_run, "weights_sha256": _weights_sha256(load_state(model_run, root=root))}
    _check_landscape_pieces(folder, settings, model_record)  # before the hours of work, not after
    model = load_weights(model_run, root=root)
    x, y = data.load_mnist("test", limit=settings["images"]).tensors
    restarts = min(settings["block"], settings["restarts"] - block * settings["block"])
    generator = torch.Generator().manual_seed(settings["seed"] * 1_000_003 + image * 10_007 + block)
    started, cpu_started = time.perf_counter(), time.process_time()
    result = pgd_landscape(model, x[image:image + 1], y[image:image + 1], eps=settings["eps"],
                           step_size=settings["step_size"], steps=settings["steps"], restarts=restarts,
                           traced=settings["traced"] if block == 0 else 0, keep_deltas=0, generator=generator,
                           progress=progress)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    arrays = {"final_losses": result.final_losses[0].numpy(), "final_predictions": result.final_predictions[0].numpy(),
              "traces": result.traces[0].numpy(), "label": np.asarray(int(y[image]))}
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    filename = f"img{image}-block{block:03d}.npz"
    piece = {
        "file": filename, "image": image, "block": block, "restarts": restarts, "sha256": _sha256(buffer.getvalue()),
        "wall_time_s": round(wall, 1), "cpu_time_s": round(cpu, 1), "threads": torch.get_num_threads(),
        **{k: v for k, v in provenance(profile=_run(model_run).profile, wall_time_s=wall).items()
           if k in ("device", "torch", "git_commit", "created_utc")},
    }
    record = {"format": FORMAT, "settings": settings, "model": model_record, "piece": piece}
    # The data first, then the record that vouches for it: a piece without its record is not read.
    storage.atomic_write_bytes(folder / filename, buffer.getvalue())
    storage.atomic_write_bytes(folder / f"{Path(filename).stem}.json", json.dumps(storage.seal(record), indent=1).encode())
    return piece


def _landscape_records(folder: Path) -> list[dict[str, Any]]:
    """The sealed records of the landscape pieces in ``folder`` (a damaged one raises)."""
    records = []
    for path in sorted(folder.glob("img*-block*.json")):
        try:
            record = json.loads(path.read_text())
            storage.check_seal(record, known={"format", "settings", "model", "piece"}, what=str(path))
            if storage.SEAL not in record or record["format"] != FORMAT:
                raise ValueError("it has no seal or another format")
            if record["piece"]["file"] != f"{path.stem}.npz":
                raise ValueError(f"it vouches for {record['piece']['file']}, not {path.stem}.npz")
        except (ValueError, KeyError, TypeError) as error:
            raise LongRunError(f"{path} is unreadable or damaged ({error}); restore it from git.") from error
        records.append(record)
    return records


def _check_landscape_pieces(folder: Path, settings: dict[str, Any], model: dict[str, str]) -> None:
    """Refuse to add a piece of other settings or other weights to the landscape in ``folder``."""
    for record in _landscape_records(folder):
        if record["settings"] != settings:
            raise LongRunError(f"{folder} holds landscape pieces made with other settings ({record['settings']}); "
                               "move the folder away to start a landscape with the new ones.")
        if record["model"] != model:
            raise LongRunError(
                f"{folder} holds landscape pieces of other weights of run {model['run']!r} (the run has trained on "
                "since); a landscape is of one model: move the folder away to start one for the current weights.")


def load_landscape(model_run: str, *, root: str | Path | None = None) -> dict[str, Any] | None:
    """The committed landscape pieces of ``model_run``, gathered per image (verified), or None.

    Returns ``{"settings", "model", "images": {k: {"final_losses" (R_k,), "final_predictions" (R_k,),
    "traces" (T, steps + 1), "label", "restarts"}}, "pieces": {file: piece entry}}``; ``R_k`` counts the
    restarts committed so far for image ``k`` (blocks in order). Pieces of different settings or
    weights in one folder raise :class:`LongRunError`.
    """
    folder = _landscape_dir(model_run, root)
    records = _landscape_records(folder) if folder.is_dir() else []
    if not records:
        return None
    for record in records[1:]:
        if (record["settings"], record["model"]) != (records[0]["settings"], records[0]["model"]):
            raise LongRunError(f"{folder} mixes landscape pieces of different settings or weights "
                               f"({record['piece']['file']} and {records[0]['piece']['file']}); restore it from git.")
    pieces = {record["piece"]["file"]: record["piece"] for record in records}
    images: dict[int, dict[str, Any]] = {}
    for filename, piece in sorted(pieces.items(), key=lambda kv: (kv[1]["image"], kv[1]["block"])):
        content = _read_verified(folder, filename, {"files": {filename: piece["sha256"]}},
                                 listed_in=f"{Path(filename).stem}.json")
        with np.load(io.BytesIO(content), allow_pickle=False) as arrays:
            entry = images.setdefault(piece["image"], {"final_losses": [], "final_predictions": [],
                                                       "label": int(arrays["label"]), "traces": None})
            entry["final_losses"].append(arrays["final_losses"])
            entry["final_predictions"].append(arrays["final_predictions"])
            if piece["block"] == 0:
                entry["traces"] = arrays["traces"]
    for entry in images.values():
        entry["final_losses"] = np.concatenate(entry["final_losses"])
        entry["final_predictions"] = np.concatenate(entry["final_predictions"])
        entry["restarts"] = len(entry["final_losses"])
    return {"settings": records[0]["settings"], "images": images, "pieces": pieces, "model": records[0]["model"]}


def landscape_result(*, plain: str = "cnn", robust: str = "cnn_pgd_fast",
                     root: str | Path | None = None) -> Result | None:
    """The committed landscapes of runs ``plain`` and ``robust`` in the layout of
    :func:`advcore.experiments.landscape` (models ``"plain"`` and ``"PGD-trained"``).

    Only the test images whose restarts are all committed for both models are included:
    ``final_losses (2, E, restarts)``, ``traces (2, E, traced, steps + 1)``. ``None`` before the
    first such image, or (with a warning) when a landscape is of other weights than its run's
    committed ones (the run trained on since) or a file fails its check.
    """
    scapes: dict[str, dict[str, Any]] = {}
    for label, run in (("plain", plain), ("PGD-trained", robust)):
        try:
            scape = load_landscape(run, root=root)
            if scape is not None and scape["model"]["weights_sha256"] != _committed_weights_sha(run, root=root):
                raise LongRunError(f"the landscape of run {run!r} is of other weights than its committed ones")
        except LongRunError as error:
            warnings.warn(f"Not showing the committed landscapes: {error}", stacklevel=2)
            return None
        if scape is None:
            return None
        scapes[label] = scape
    settings = scapes["plain"]["settings"]
    if scapes["PGD-trained"]["settings"] != settings:
        warnings.warn("Not showing the committed landscapes: the two runs' landscapes were made with different "
                      "settings.", stacklevel=2)
        return None
    complete = sorted(k for k in scapes["plain"]["images"] if all(
        k in scape["images"] and scape["images"][k]["restarts"] == settings["restarts"]
        and scape["images"][k]["traces"] is not None for scape in scapes.values()))
    if not complete:
        return None
    pieces = [piece for scape in scapes.values() for piece in scape["pieces"].values() if piece["image"] in complete]
    # the pieces' commits in the order the pieces were made; many pieces name many commits (each piece's
    # checkout was at the latest result commit), so a long list shows its first and last
    by_time = sorted(pieces, key=lambda piece: piece.get("created_utc") or "")
    commits = list(dict.fromkeys((piece.get("git_commit") or "unknown")[:7] for piece in by_time))
    made_at = (f"{len(commits)} commits from {commits[0]} to {commits[-1]}" if len(commits) > 3 else
               ("commits " if len(commits) > 1 else "commit ") + ", ".join(commits))
    devices = sorted({piece["device"] for piece in pieces})
    cpu_hours, wall_hours = (sum(p[key] for p in pieces) / 3600 for key in ("cpu_time_s", "wall_time_s"))
    description = (f"{settings['restarts']:,} restarts x {settings['steps']} PGD steps of {settings['step_size']:g} "
                   f"per image, attack in float32, on {' and '.join(devices)}: {cpu_hours:.1f} "
                   f"CPU hours ({wall_hours:.1f} h wall time) in {len(pieces)} "
                   f"pieces, at {made_at}")
    data = {"models": list(scapes), "zoo_names": [_run(plain).zoo_name, _run(robust).zoo_name], "examples": complete,
            "labels": [scapes["plain"]["images"][k]["label"] for k in complete],
            "settings": {key: settings[key] for key in ("eps", "step_size", "steps", "restarts", "traced")}}
    arrays = {what: np.stack([np.stack([scape["images"][k][what] for k in complete]) for scape in scapes.values()])
              for what in ("final_losses", "traces")}
    return Result(name="landscape", data=data, arrays=arrays, path=_landscape_dir(plain, root),
                  provenance={"profile": "long runs", "description": description})


# =========================================================================== the paper's evaluation

#: Madry et al.'s evaluation of the MNIST networks (ICLR 2018, Sec. 4 and Table 1; the paper's
#: figures: ``papers.number("madry.mnist.pgd40")`` and ``"madry.mnist.pgd100_restarts20"``): PGD of
#: 0.01 at eps = 0.3 from a random start, 40 steps, and 100 steps with 20 restarts; and on how many
#: MNIST test images each piece runs (the paper: all 10,000). PGD-100 x 20 on 1,000 images is about
#: 2 million gradient steps (83.5 CPU minutes for `cnn` on one AVX2 EPYC core, measured), so it is
#: made in pieces of 1,000 images that :func:`evaluate_run` with ``extend=True`` adds one at a time.
EVALUATIONS: dict[str, tuple[AttackSpec, int]] = {
    "fgsm": (AttackSpec("fgsm", MADRY_EPS), 10_000),
    "pgd40": (AttackSpec("pgd", MADRY_EPS, MADRY_STEP, 40), 10_000),
    "pgd100x20": (AttackSpec("pgd", MADRY_EPS, MADRY_STEP, 100, restarts=20), 1_000),
}

#: What each piece of an evaluation records, beside its counts (the whole evaluation's fields of
#: the same names describe its latest piece; its times are the pieces' sums).
_PIECE_PROVENANCE = ("threads", "device", "torch", "git_commit", "created_utc")


def _evaluations_path(name: str, root: str | Path | None) -> Path:
    return run_dir(name, root=root) / "evaluations.json"


def _evaluation_pieces(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The pieces of one evaluation record: contiguous runs of test images ``first ...
    first + test_examples - 1`` with their error counts. A record made in one go before pieces
    existed is its own single piece (its rates times its image count are whole numbers)."""
    if "pieces" in result:
        return result["pieces"]
    n = result["test_examples"]
    return [{"first": 0, "test_examples": n, "seed": 0, "clean_errors": round(result["clean_error"] * n),
             "attack_errors": round(result["attack_error"] * n),
             "attack_confidence": result["attack_confidence"], "wall_time_s": result["wall_time_s"],
             "cpu_time_s": result["cpu_time_s"], **{key: result[key] for key in _PIECE_PROVENANCE}}]


def _errors(measured: EvalResult) -> int:
    """How many of the evaluated images ``measured`` misclassified."""
    return int((measured.predictions != measured.labels).sum())


def _combined(attack: str, pieces: list[dict[str, Any]]) -> dict[str, Any]:
    """One evaluation's record from its pieces: rates over all their images, summed times."""
    n = sum(piece["test_examples"] for piece in pieces)
    return {"attack": attack, "test_examples": n,
            "clean_error": sum(piece["clean_errors"] for piece in pieces) / n,
            "attack_error": sum(piece["attack_errors"] for piece in pieces) / n,
            "attack_confidence": sum(piece["attack_confidence"] * piece["test_examples"] for piece in pieces) / n,
            "wall_time_s": round(sum(piece["wall_time_s"] for piece in pieces), 1),
            "cpu_time_s": round(sum(piece["cpu_time_s"] for piece in pieces), 1),
            **{key: pieces[-1][key] for key in _PIECE_PROVENANCE}, "pieces": pieces}


def _check_pieces(which: str, result: dict[str, Any]) -> None:
    """A pieced evaluation's rates are its pieces' counts, and the pieces tile the first images."""
    pieces = result.get("pieces")
    if pieces is None:
        return
    first = 0
    for piece in pieces:
        if piece["first"] != first:
            raise ValueError(f"{which}: its pieces do not follow one another from test image 0")
        first += piece["test_examples"]
    combined = _combined(result["attack"], pieces)
    if any(combined[key] != result[key] for key in ("test_examples", "clean_error", "attack_error")):
        raise ValueError(f"{which}: its rates are not its pieces' counts")


def load_evaluations(name: str, *, root: str | Path | None = None) -> dict[str, Any]:
    """The committed evaluations of run ``name``'s final weights (``{}`` when none): evaluation
    name -> ``{"attack", "test_examples", "clean_error", "attack_error", ...}``, with ``"pieces"``
    when it was made in pieces (verified; a damaged file, or an evaluation of other weights than
    the run's committed ones, raises :class:`LongRunError`)."""
    path = _evaluations_path(name, root)
    if not path.exists():
        return {}
    try:
        record = json.loads(path.read_text())
        storage.check_seal(record, known={"format", "model", "results"}, what=str(path))
        if storage.SEAL not in record or record["format"] != FORMAT:
            raise ValueError("it has no seal or another format")
        weights_sha256, results = record["model"]["weights_sha256"], dict(record["results"])
        for which, result in results.items():
            _check_pieces(which, result)
    except (ValueError, KeyError, TypeError) as error:
        raise LongRunError(f"{path} is unreadable or damaged ({error}); restore it from git.") from error
    state = load_state(name, root=root)
    if state is None or weights_sha256 != _weights_sha256(state):
        raise LongRunError(f"{path} evaluates other weights than run {name!r}'s committed ones; "
                           "move it away and evaluate again.")
    return results


def evaluate_run(name: str, which: str, *, extend: bool = False, root: str | Path | None = None,
                 progress: bool = True) -> dict[str, Any]:
    """Run evaluation ``which`` (:data:`EVALUATIONS`) on the finished run's committed float16 weights,
    write it into ``evaluations.json`` beside the run (atomically, sealed, with provenance) and return it.

    Each call evaluates one piece of the evaluation's size (:data:`EVALUATIONS`) of MNIST test
    images: the first ones, replacing an earlier ``which``; or, with ``extend``, the next ones
    after those already evaluated, added to them (a long evaluation made in pieces that each finish
    and are committed; the random starts of the piece from test image ``k`` are seeded with ``k``).
    """
    from advcore.evaluate import evaluate

    if which not in EVALUATIONS:
        raise KeyError(f"No evaluation named {which!r}; choose one of {', '.join(EVALUATIONS)}.")
    state = load_state(name, root=root)
    if state is None or state["epochs_done"] < state["epochs_total"]:
        raise LongRunError(f"Run {name!r} is not finished: train its remaining pieces first "
                           f"(`python -m advcore.longrun status {name}` says how far it is).")
    earlier = load_evaluations(name, root=root)  # a damaged file fails now, not after the attack
    spec, examples = EVALUATIONS[which]
    pieces = _evaluation_pieces(earlier[which]) if extend and which in earlier else []
    if pieces and earlier[which]["attack"] != spec.describe():
        raise LongRunError(f"The committed {which!r} of {name!r} used another attack ({earlier[which]['attack']}); "
                           f"evaluate it afresh, without extend.")
    first = sum(piece["test_examples"] for piece in pieces)
    images, labels = data.load_mnist("test").tensors
    if first >= len(labels):
        raise LongRunError(f"Evaluation {which!r} of {name!r} already covers all {len(labels):,} test images.")
    test = (images[first:first + examples], labels[first:first + examples])
    model = load_weights(name, root=root)
    started, cpu_started = time.perf_counter(), time.process_time()
    clean = evaluate(model, test, progress=progress)
    attacked = evaluate(model, test, attack=spec.seeded(first, "cpu"), progress=progress)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    made = {**provenance(profile=_run(name).profile, wall_time_s=wall), "threads": torch.get_num_threads()}
    pieces.append({"first": first, "test_examples": clean.n, "seed": first,
                   "clean_errors": _errors(clean), "attack_errors": _errors(attacked),
                   "attack_confidence": attacked.mean_confidence, "wall_time_s": round(wall, 1),
                   "cpu_time_s": round(cpu, 1), **{key: made[key] for key in _PIECE_PROVENANCE}})
    result = _combined(spec.describe(), pieces)
    record = {"format": FORMAT, "model": {"run": name, "weights_sha256": _weights_sha256(state)},
              "results": {**earlier, which: result}}
    storage.atomic_write_bytes(_evaluations_path(name, root), json.dumps(storage.seal(record), indent=1).encode())
    return result


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m advcore.longrun", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    piece = commands.add_parser("piece", help="train the next piece of a run and write it under results/runs/")
    piece.add_argument("run", choices=sorted(RUNS))
    piece.add_argument("--epochs", type=int, default=1, help="epochs in this piece (keep it well under 90 min)")
    piece.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    piece.add_argument("--root", default=None, help="results folder (default: the checkout's results/)")
    piece.add_argument("--commit", action="store_true", help="git add and commit the run folder when done")
    piece.add_argument("--pieces", type=int, default=1,
                       help="train up to this many pieces one after another (each one committed with --commit)")
    scape = commands.add_parser("landscape", help="one piece of the 10^5-restart landscape on a run's model")
    scape.add_argument("run", choices=sorted(RUNS))
    scape.add_argument("--image", type=int, required=True, help=f"MNIST test image, 0-{LANDSCAPE['images'] - 1}")
    scape.add_argument("--block", type=_blocks, required=True,
                       help=f"which {LANDSCAPE['block']:,} restarts (0-{LANDSCAPE['restarts'] // LANDSCAPE['block'] - 1}), "
                       "or a range of blocks made one after another, e.g. 0-9")
    scape.add_argument("--threads", type=int, default=None)
    scape.add_argument("--root", default=None)
    scape.add_argument("--commit", action="store_true", help="git add and commit the piece when done")
    judge = commands.add_parser("evaluate", help="the paper's evaluation of a finished run's weights")
    judge.add_argument("run", choices=sorted(RUNS))
    judge.add_argument("--attack", choices=sorted(EVALUATIONS), required=True)
    judge.add_argument("--extend", action="store_true",
                       help="evaluate the next test images after those already evaluated and add them")
    judge.add_argument("--threads", type=int, default=None)
    judge.add_argument("--root", default=None)
    judge.add_argument("--commit", action="store_true", help="git add and commit evaluations.json when done")
    status = commands.add_parser("status", help="what the committed run holds")
    status.add_argument("run", choices=sorted(RUNS))
    status.add_argument("--root", default=None)
    args = parser.parse_args(argv)
    if args.command == "status":
        manifest = load_state(args.run, root=args.root)
        if manifest is None:
            print(f"{args.run}: no piece committed yet")
            return 0
        print(f"{args.run}: {manifest['epochs_done']} of {manifest['epochs_total']} epochs in "
              f"{len(manifest['pieces'])} piece(s); last: {manifest['pieces'][-1]['last_epoch']}")
        for note in manifest["notes"]:
            print(f"  note: {note}")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.command == "landscape":
        for block in args.block:
            piece = landscape_piece(args.run, image=args.image, block=block, root=args.root)
            print(f"{args.run}: landscape image {args.image}, block {block}: {piece['restarts']:,} restarts in "
                  f"{piece['wall_time_s'] / 60:.1f} min ({piece['cpu_time_s'] / 60:.1f} CPU min)", flush=True)
            if args.commit:
                _git_commit(_landscape_dir(args.run, args.root), f"results/runs/{args.run}: landscape image "
                            f"{args.image}, block {block} ({piece['wall_time_s'] / 60:.0f} min)")
        return 0
    if args.command == "evaluate":
        result = evaluate_run(args.run, args.attack, extend=args.extend, root=args.root)
        piece = result["pieces"][-1]
        images = f"test images {piece['first']:,}-{piece['first'] + piece['test_examples'] - 1:,}"
        print(f"{args.run}: {result['attack']} on {images}: accuracy {1 - piece['attack_errors'] / piece['test_examples']:.2%} "
              f"in {piece['wall_time_s'] / 60:.1f} min ({piece['cpu_time_s'] / 60:.1f} CPU min); on all "
              f"{result['test_examples']:,} evaluated: {1 - result['attack_error']:.2%} "
              f"(clean {1 - result['clean_error']:.2%})", flush=True)
        if args.commit:
            _git_commit(_evaluations_path(args.run, args.root),
                        f"results/runs/{args.run}: evaluation {args.attack}, {images}")
        return 0
    for _ in range(args.pieces):
        entry = run_piece(args.run, epochs=args.epochs, root=args.root)
        if entry.get("finished"):
            print(f"{args.run}: already finished; nothing to do")
            return 0
        last = entry["last_epoch"]
        print(f"{args.run}: piece {entry['index']} done, epochs {entry['epochs'][0]}-{entry['epochs'][1]} in "
              f"{entry['wall_time_s'] / 60:.1f} min ({entry['cpu_time_s'] / 60:.1f} CPU min); validation accuracy "
              f"clean {last.get('val_clean_acc', float('nan')):.4f}, adversarial "
              f"{last.get('val_adv_acc', float('nan')):.4f}", flush=True)
        if args.commit:
            _git_commit(run_dir(args.run, root=args.root), f"results/runs/{args.run}: piece {entry['index']} "
                        f"(epochs {entry['epochs'][0]}-{entry['epochs'][1]}, {entry['wall_time_s'] / 60:.0f} min)")
    return 0


def _blocks(text: str) -> list[int]:
    """``"3"`` -> ``[3]``, ``"0-9"`` -> ``[0, ..., 9]`` (the command line's landscape blocks)."""
    import argparse

    first, _, last = text.partition("-")
    try:
        blocks = list(range(int(first), int(last or first) + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a block is a number or a range like 0-9, got {text!r}") from None
    if not blocks:
        raise argparse.ArgumentTypeError(f"the range {text!r} holds no block: write the lower end first")
    return blocks


def _git_commit(path: Path, message: str) -> None:
    """``git add`` and ``git commit`` only ``path`` (a finished piece's files: written atomically, complete)."""
    subprocess.run(["git", "add", "--", str(path)], check=True)
    subprocess.run(["git", "commit", "-q", "-m", message, "--", str(path)], check=True)


if __name__ == "__main__":
    sys.exit(main())
