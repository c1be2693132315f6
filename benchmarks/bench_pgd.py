"""PGD throughput: advcore.attacks.pgd vs. the textbook loop vs. torchattacks.PGD.

Measures example-steps per second (batch size x PGD steps / wall time) of an L-infinity
PGD attack (Madry et al. 2018: eps = 0.3, step 0.01, 40 steps, random start) on Madry's
MNIST CNN, batch 256, for seven implementations on the same weights and inputs, in one
run, interleaved so that machine drift hits all of them alike:

* ``advcore``      -- ``advcore.attacks.pgd``, its default (fast) path, on
                      ``advcore.models.MadryCNN`` (each max-pool before its ReLU);
* ``advcore-bf16`` -- the same with ``precision="bfloat16"`` (``--no-bf16`` skips it);
* ``advcore-other-layout`` -- the default path in the memory layout advcore does *not* pick on
                      this device (``attacks.CHANNELS_LAST`` flipped for the call): whether
                      that choice is right here (``--no-layout`` skips it);
* ``plain``        -- what advcore did before its fast paths: Madry et al.'s update rule in
                      NCHW float32 with the input gradient only (``autograd.grad``), on the
                      network in the released code's layer order (conv, ReLU, pool);
* ``textbook``     -- the loop as usually written in tutorials (``loss.backward()`` on a
                      ``delta`` leaf, parameters still requiring gradients), released order;
* ``torchattacks`` -- ``torchattacks.PGD`` on advcore's network (attack against attack);
* ``torchattacks-released`` -- ``torchattacks.PGD`` on the released order (both skipped when
                      torchattacks is not installed: ``pip install --no-deps torchattacks``,
                      as its pinned ``requests`` would downgrade the book's).

It prints the median time of each, the mean loss each reached, and the ratios; every result
is checked to lie in the eps-ball and in [0, 1]. ``--threads 1,2`` repeats it all per setting. ``--landscape`` instead times the
inner-max landscape case of the lecture: ``restarts`` (default 10^5) PGD runs of
``--landscape-steps`` (default 100) on one MNIST example with ``advcore.landscape``.

Usage::

    python benchmarks/bench_pgd.py                         # CPU, about two minutes
    python benchmarks/bench_pgd.py --repeats 5             # steadier medians
    python benchmarks/bench_pgd.py --device cuda --repeats 20
    python benchmarks/bench_pgd.py --device cuda --landscape
    python benchmarks/bench_pgd.py --landscape --restarts 2000 --landscape-steps 40 --precision bfloat16

The weights are random (throughput does not depend on them); the inputs are uniform
random images in [0, 1].
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advcore.attacks import pgd

try:
    import torchattacks
except ImportError:  # optional: the comparison is skipped
    torchattacks = None


def madry_cnn(*, relu_before_pool: bool = False) -> nn.Module:
    """Madry et al.'s MNIST CNN (``advcore.models.MadryCNN``): advcore's layer order (pool, then
    ReLU) or, with ``relu_before_pool``, the released code's (the same function, slower)."""
    from advcore.models import MadryCNN

    return MadryCNN(relu_before_pool=relu_before_pool)


def released_order(model: nn.Module) -> nn.Module:
    """The same network with the same weights in the released code's layer order (conv, ReLU, pool)."""
    copy = madry_cnn(relu_before_pool=True).to(next(model.parameters()).device)
    copy.load_state_dict(model.state_dict())
    return copy


def textbook_pgd(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, step_size: float, steps: int) -> Tensor:
    """PGD as tutorials write it: a delta leaf, loss.backward(), manual clipping."""
    delta = torch.empty_like(x).uniform_(-eps, eps)
    delta = ((x + delta).clamp(0, 1) - x).requires_grad_(True)
    for _ in range(steps):
        loss = F.cross_entropy(model(x + delta), y)
        loss.backward()
        delta.data = (delta + step_size * delta.grad.sign()).clamp(-eps, eps)
        delta.data = (x + delta.data).clamp(0, 1) - x
        delta.grad.zero_()
    return (x + delta).detach()


def plain_pgd(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, step_size: float, steps: int) -> Tensor:
    """advcore's loop before its fast path: NCHW float32, gradient w.r.t. the input only."""
    lower, upper = (x - eps).clamp(min=0), (x + eps).clamp(max=1)
    x_adv = torch.clamp(x + torch.empty_like(x).uniform_(-eps, eps), lower, upper)
    for param in model.parameters():
        param.requires_grad_(False)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y, reduction="sum"), x_adv)
        x_adv = torch.clamp(x_adv.detach() + step_size * grad.sign(), lower, upper)
    for param in model.parameters():
        param.requires_grad_(True)
    return x_adv


def in_other_layout(attack: Callable[[Tensor, Tensor], Tensor], device: torch.device) -> Callable[[Tensor, Tensor], Tensor]:
    """``attack`` run in the memory layout advcore does not pick on ``device`` (``bench_train.other_layout``)."""
    from bench_train import other_layout

    def flipped(x: Tensor, y: Tensor) -> Tensor:
        with other_layout(device):
            return attack(x, y)

    return flipped


def make_attacks(model: nn.Module, eps: float, step_size: float, steps: int,
                 bf16: bool = True, layout: bool = True) -> dict[str, Callable[[Tensor, Tensor], Tensor]]:
    """The implementations to compare, each a function of (x, y).

    ``advcore`` and ``torchattacks`` attack ``model`` itself (attack against attack);
    ``plain``, ``textbook`` and ``torchattacks-released`` the same weights in the released
    code's layer order, i.e. what advcore computed before its fast paths and what a tutorial or
    torchattacks computes on the network as Madry et al. wrote it.
    """
    released = released_order(model)
    attacks: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
        "advcore": lambda x, y: pgd(model, x, y, eps=eps, step_size=step_size, steps=steps),
    }
    if layout:
        attacks["advcore-other-layout"] = in_other_layout(attacks["advcore"], next(model.parameters()).device)
    if bf16:
        attacks["advcore-bf16"] = lambda x, y: pgd(model, x, y, eps=eps, step_size=step_size, steps=steps,
                                                   precision="bfloat16")
    attacks.update({
        "plain": lambda x, y: plain_pgd(released, x, y, eps=eps, step_size=step_size, steps=steps),
        "textbook": lambda x, y: textbook_pgd(released, x, y, eps=eps, step_size=step_size, steps=steps),
    })
    if torchattacks is not None:
        ta = torchattacks.PGD(model, eps=eps, alpha=step_size, steps=steps, random_start=True)
        ta_released = torchattacks.PGD(released, eps=eps, alpha=step_size, steps=steps, random_start=True)
        attacks["torchattacks"] = lambda x, y: ta(x, y)
        attacks["torchattacks-released"] = lambda x, y: ta_released(x, y)
    return attacks


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_attacks(attacks: dict[str, Callable[[Tensor, Tensor], Tensor]],
                 warmups: dict[str, Callable[[Tensor, Tensor], Tensor]], x: Tensor, y: Tensor,
                 *, eps: float, repeats: int) -> tuple[dict[str, list[tuple[float, float]]], dict[str, Tensor]]:
    """(wall, CPU) seconds per call of each attack, interleaved round-robin, and the last result of each.

    CPU time (this process, all threads) is reported beside wall time because on a shared
    machine other processes stretch the wall time of whichever attack happens to be running.
    """
    for warmup in warmups.values():  # a short run each: allocator, oneDNN/cuDNN kernel choice
        warmup(x, y)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in attacks}
    results: dict[str, Tensor] = {}
    for _ in range(repeats):
        for name, attack in attacks.items():
            synchronize(x.device)
            wall, cpu = time.perf_counter(), time.process_time()
            results[name] = attack(x, y)
            synchronize(x.device)
            times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    for name, x_adv in results.items():
        excess = ((x_adv - x).abs().max() - eps).item()
        assert excess <= 1e-5 and 0 <= x_adv.min() and x_adv.max() <= 1, f"{name} left the eps-ball"
    return times, results


def run_throughput(args: argparse.Namespace, device: torch.device) -> None:
    torch.manual_seed(0)
    model = madry_cnn().to(device)
    x = torch.rand(args.batch, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    if torchattacks is None:
        print("torchattacks is not installed: skipping it (pip install torchattacks).")
    attacks = make_attacks(model, args.eps, args.step_size, args.steps, bf16=args.bf16, layout=args.layout)
    warmups = make_attacks(model, args.eps, args.step_size, 2, bf16=args.bf16, layout=args.layout)
    times, results = time_attacks(attacks, warmups, x, y, eps=args.eps, repeats=args.repeats)
    work = args.batch * args.steps
    wall = {name: statistics.median(t[0] for t in runs) for name, runs in times.items()}
    cpu = {name: statistics.median(t[1] for t in runs) for name, runs in times.items()}
    print(f"\nPGD on MadryCNN (random weights), batch {args.batch}, {args.steps} steps, eps {args.eps}, "
          f"step {args.step_size}, random start, device {device}; medians of {args.repeats} "
          f"interleaved run(s) each:")
    print(f"  {'':21s} {'wall s':>7s} {'example-steps/s':>16s} {'CPU s':>7s}   mean loss reached")
    for name in attacks:
        with torch.no_grad():
            loss = F.cross_entropy(model.eval()(results[name]), y).item()
        print(f"  {name:21s} {wall[name]:7.2f} {work / wall[name]:16,.0f} {cpu[name]:7.2f}   {loss:.3f}")
    if "advcore-other-layout" in wall:
        print(f"  speed of advcore's layout / the other layout: {wall['advcore-other-layout'] / wall['advcore']:.2f}x "
              f"by wall time, {cpu['advcore-other-layout'] / cpu['advcore']:.2f}x by CPU time "
              "(>1: advcore's choice is right here)")
    for mine in [name for name in ("advcore", "advcore-bf16") if name in wall]:
        for other in ("plain", "textbook", "torchattacks", "torchattacks-released"):
            if other in wall:
                print(f"  speed of {mine} / {other}: {wall[other] / wall[mine]:.2f}x by wall time, "
                      f"{cpu[other] / cpu[mine]:.2f}x by CPU time (>1: {mine} faster)")


def run_landscape(args: argparse.Namespace, device: torch.device) -> None:
    from advcore.landscape import pgd_landscape

    torch.manual_seed(0)
    model = madry_cnn().to(device)
    x = torch.rand(1, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (1,), device=device)
    kwargs = dict(eps=args.eps, step_size=args.step_size, steps=args.landscape_steps, traced=20,
                  keep_deltas=256, progress=False, chunk_size=args.chunk_size, precision=args.precision,
                  generator=torch.Generator(device).manual_seed(0))
    pgd_landscape(model, x, y, restarts=min(args.restarts, 1_000), **{**kwargs, "steps": 2})  # warm-up
    synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    result = pgd_landscape(model, x, y, restarts=args.restarts, **kwargs)
    synchronize(device)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    work = args.restarts * args.landscape_steps
    for rate, what in ((work / wall, "wall time here"), (work / cpu, "CPU time, i.e. a quiet machine")):
        paper = 100_000 * 40 / rate
        print(f"  at this rate ({what}), one image's 10^5 restarts x 40 steps take {paper / 60:.0f} min "
              f"({paper / 60 * 100 / 40:.0f} min for 100 steps)")
    spread = {name: float(value[0]) for name, value in result.loss_spread().items()}
    print(f"\nLandscape: {args.restarts:,} restarts x {args.landscape_steps} steps on one example, "
          f"{args.precision}, device {device}, chunks of {result.chunk_size:,} rows: {wall:.2f} s wall, {cpu:.2f} s CPU "
          f"({work / wall:,.0f} example-steps/s)")
    print("  final loss: " + ", ".join(f"{name} {value:.3f}" for name, value in spread.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--eps", type=float, default=0.3)
    parser.add_argument("--step-size", type=float, default=0.01)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per implementation")
    parser.add_argument("--threads", default=None, help="torch.set_num_threads (CPU), comma-separated: 1,2")
    parser.add_argument("--no-bf16", dest="bf16", action="store_false", help="skip advcore-bf16")
    parser.add_argument("--no-layout", dest="layout", action="store_false", help="skip advcore-other-layout")
    parser.add_argument("--landscape", action="store_true", help="time the many-restart landscape case instead")
    parser.add_argument("--restarts", type=int, default=100_000)
    parser.add_argument("--landscape-steps", type=int, default=100)
    parser.add_argument("--chunk-size", type=int, default=None, help="rows per forward pass (landscape)")
    parser.add_argument("--precision", choices=("float32", "bfloat16"), default="float32",
                        help="arithmetic of the landscape's passes (the throughput run times both)")
    args = parser.parse_args()
    device = torch.device(args.device)
    from advcore.attacks import CHANNELS_LAST, bfloat16_is_native
    from bench_train import cpu_description

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_description()
    print(f"torch {torch.__version__}, {name}; channels-last by default: {CHANNELS_LAST.get(device.type)}, "
          f"bfloat16 native: {bfloat16_is_native(device)}")
    if device.type == "cuda":
        print(f"TF32: cuDNN {torch.backends.cudnn.allow_tf32}, matmul {torch.backends.cuda.matmul.allow_tf32}")
    for threads in (args.threads or str(torch.get_num_threads())).split(","):
        torch.set_num_threads(int(threads))
        load = ", load average %.1f" % os.getloadavg()[0] if hasattr(os, "getloadavg") else ""
        print(f"\n## {torch.get_num_threads()} CPU thread(s) of {os.cpu_count()}{load}")
        run_landscape(args, device) if args.landscape else run_throughput(args, device)


if __name__ == "__main__":
    main()
