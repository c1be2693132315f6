"""APGD: advcore.attacks.apgd vs. torchattacks.APGD on the same trained model and budget.

Both run Auto-PGD (Croce & Hein 2020, Sec. 3: L-infinity, cross-entropy loss, step size
2 eps halved at the checkpoints, momentum 0.75, rho 0.75) with the same number of
iterations and one restart, on the first ``--batch`` MNIST test images that a trained zoo
model (default ``cnn_pgd`` of the current ``ADVCORE_PROFILE``: trained on first use,
then cached) classifies correctly -- torchattacks, like the authors' code, attacks only those. The two are run round-robin in one process, so machine drift hits both
alike, and the script prints, per implementation, the median wall and CPU time, the
robust accuracy reached (the fraction of images still classified correctly), and the
speed ratios.

Budgets differ by one gradient: ``torchattacks.APGD(steps=N)`` (the authors' code)
computes N + 1 gradients (at the start and after every iteration), ``advcore.apgd(steps=N)``
computes N and one forward pass at the last iterate. The printed ratio is per call.

Usage::

    python benchmarks/bench_apgd.py                        # CPU, a few minutes
    python benchmarks/bench_apgd.py --threads 1 --repeats 3
    python benchmarks/bench_apgd.py --device cuda --batch 1000 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from typing import Callable

import torch
from torch import Tensor, nn

from advcore import data, zoo
from advcore.attacks import apgd
from advcore.profiles import current_profile

try:
    import torchattacks
except ImportError:  # optional: the comparison is skipped
    torchattacks = None


def make_attacks(model: nn.Module, eps: float, steps: int) -> dict[str, Callable[[Tensor, Tensor], Tensor]]:
    """The implementations to compare, each a function of (x, y), one restart, CE loss."""
    attacks: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
        "advcore": lambda x, y: apgd(model, x, y, eps=eps, steps=steps, loss="ce",
                                     generator=torch.Generator(x.device).manual_seed(0)),
    }
    if torchattacks is not None:
        ta = torchattacks.APGD(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, seed=0, loss="ce")
        attacks["torchattacks"] = lambda x, y: ta(x, y)
    return attacks


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--model", default="cnn_pgd", help="a zoo name (default cnn_pgd)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=100, help="APGD iterations (the paper: 100)")
    parser.add_argument("--eps", type=float, default=0.3)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per implementation")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    load = ", load average %.1f" % os.getloadavg()[0] if hasattr(os, "getloadavg") else ""
    print(f"torch {torch.__version__}, torchattacks {getattr(torchattacks, '__version__', 'not installed')}, "
          f"{name}, {torch.get_num_threads()} CPU threads of {os.cpu_count()}{load}")

    profile = current_profile()
    model = zoo.get(args.model, device=device).eval()
    # Only images the model classifies correctly: torchattacks (like the authors' code) attacks only
    # those and returns the others unchanged, so this gives both the same work.
    test = data.load_mnist("test", limit=4 * args.batch)
    x, y = test.tensors[0].to(device), test.tensors[1].to(device)
    with torch.no_grad():
        correct = torch.cat([model(part).argmax(1) for part in x.split(500)]) == y
    x, y = x[correct][: args.batch], y[correct][: args.batch]
    attacks = make_attacks(model, args.eps, args.steps)
    for attack in make_attacks(model, args.eps, 2).values():  # warm-up: allocator, kernel choice
        attack(x, y)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in attacks}
    results: dict[str, Tensor] = {}
    for _ in range(args.repeats):
        for label, attack in attacks.items():
            synchronize(device)
            wall, cpu = time.perf_counter(), time.process_time()
            results[label] = attack(x, y)
            synchronize(device)
            times[label].append((time.perf_counter() - wall, time.process_time() - cpu))
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean().item()
    print(f"\nAPGD-CE on zoo '{args.model}' [{profile.name} profile], {len(x)} MNIST test images it classifies "
          f"correctly (clean accuracy {clean:.1%}), eps {args.eps}, {args.steps} iterations, 1 restart, device {device}; "
          f"medians of {args.repeats} interleaved run(s):")
    print(f"  {'':13s} {'wall s':>7s} {'CPU s':>7s}   robust accuracy")
    wall = {k: statistics.median(t[0] for t in v) for k, v in times.items()}
    cpu = {k: statistics.median(t[1] for t in v) for k, v in times.items()}
    for label, x_adv in results.items():
        excess = ((x_adv - x).abs().max() - args.eps).item()
        assert excess <= 1e-5 and 0 <= x_adv.min() and x_adv.max() <= 1, f"{label} left the eps-ball"
        with torch.no_grad():
            robust = (model(x_adv).argmax(1) == y).float().mean().item()
        print(f"  {label:13s} {wall[label]:7.2f} {cpu[label]:7.2f}   {robust:.1%}")
    if "torchattacks" in wall:
        print(f"  speed of advcore / torchattacks: {wall['torchattacks'] / wall['advcore']:.2f}x by wall time, "
              f"{cpu['torchattacks'] / cpu['advcore']:.2f}x by CPU time (>1: advcore faster)")
    else:
        print("torchattacks is not installed: nothing to compare with (pip install torchattacks).")


if __name__ == "__main__":
    main()
