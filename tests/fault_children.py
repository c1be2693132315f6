"""The runs that tests/test_faults.py kills with SIGKILL: a training run and an experiment.

They run in processes forked from a server that has already imported torch and advcore
(``multiprocessing``'s forkserver, see ``test_faults.py``), so starting one takes a
fraction of a second instead of a fresh interpreter's import of torch. Each writes what it
computed as JSON to ``out``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time

import torch
from torch.utils.data import TensorDataset

from advcore import __main__ as cli
from advcore import experiments
from advcore import train as training

EPOCHS = 12
PIECES = 16


def training_run(checkpoint: str | None, out: str) -> None:
    """A small training run using every source of randomness (shuffling, dropout, noise)."""
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(512, 1, 8, 8, generator=generator)
    y = (x.mean((1, 2, 3)) * 40).long() % 10
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 64), torch.nn.ReLU(),
                                torch.nn.Dropout(0.2), torch.nn.Linear(64, 10))
    started = time.perf_counter()
    history = training.train(model, TensorDataset(x, y), objective=training.NoiseObjective(eps=0.1), epochs=EPOCHS,
                             batch_size=32, lr=1e-2, seed=3, checkpoint=checkpoint, progress=False,
                             monitor=training.FGSMAttack(0.1), eval_train_examples=64)
    weights = hashlib.sha256(b"".join(v.numpy().tobytes() for v in model.state_dict().values())).hexdigest()
    epochs = {k: v for k, v in history.epochs.items() if k != "seconds"}
    with open(out, "w") as handle:
        json.dump({"weights": weights, "steps": history.steps, "epochs": epochs,
                   "seconds": time.perf_counter() - started}, handle)


def _stand_in(profile, *, device=None, progress=False) -> dict:
    """An experiment of ``PIECES`` cached pieces (as the landscape's (model, example) pairs)."""
    values = []
    for index in range(PIECES):
        def compute(index: int = index) -> dict:
            generator = torch.Generator().manual_seed(index)
            matrix = torch.randn(160, 160, generator=generator)
            for _ in range(30):
                matrix = torch.tanh(matrix @ matrix / 160)
            return {"value": matrix.sum()}
        values.append(experiments._cached("kill-test", {"index": index}, compute, profile=profile)["value"])
    return {"values": torch.stack(values), "count": len(values)}


def experiment_run(root: str, cache: str, out: str) -> None:
    """``python -m advcore run`` of the stand-in experiment, with its own cache."""
    torch.set_num_threads(1)
    os.environ["ADVCORE_CACHE"] = cache
    experiments.EXPERIMENTS["kill-test"] = experiments.Experiment("kill-test", 0, "fault test", _stand_in)
    started = time.perf_counter()
    code = cli.main(["run", "kill-test", "--profile", "smoke", "--root", root, "--no-progress"])
    with open(out, "w") as handle:
        json.dump({"code": code, "seconds": time.perf_counter() - started}, handle)
