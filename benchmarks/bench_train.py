"""PGD-training throughput: ``advcore.train.train`` vs. a plain reference loop, in one run.

Trains Madry et al.'s MNIST CNN with PGD adversarial training (Madry et al. 2018, Sec. 4; the
lecture's "Algorithm 1" box is Wong, Rice & Kolter 2020's: eps = 0.3,
random start, ``--steps`` PGD steps of 2.5 * eps / steps, or Madry's 0.01 for 40 steps;
Adam, batch 50) on the first ``--examples`` MNIST training images, three ways, interleaved
``--repeats`` times so that machine drift hits all of them alike:

* ``advcore.train``      -- :func:`advcore.train.train` with :class:`~advcore.train.PGDObjective`
                            (history per step, no per-epoch evaluation, no checkpoint): the
                            default fast path (channels-last, float32);
* ``advcore.train bf16`` -- the same with ``precision="bfloat16"`` (``--precisions``);
* ``advcore.train other layout`` -- the default path in the memory layout advcore does *not*
                            pick on this device (``attacks.CHANNELS_LAST`` flipped for the run);
* ``bare loop``          -- ``x_adv = advcore.attacks.pgd(...)``, one Adam step, nothing recorded;
* ``reference``          -- the plain loop, what advcore did before its fast paths: PGD written
                            inline in NCHW float32 (input gradient only), one Adam step, on the
                            network in the released code's layer order (conv, ReLU, pool; the
                            others train ``MadryCNN``, which pools before its ReLUs: the same
                            function, bit for bit).

Ratios are against ``reference``. ``--steps 7,40`` and ``--threads 1,2`` run each setting in
turn in the same process.

It prints training examples per second (median wall time over repeats), the process CPU
time (steadier on a shared machine) and the ratios (> 1: faster than the reference). Every run
starts from the same initial weights; the weights are not kept.

``--full-schedule`` instead times Madry et al.'s whole MNIST schedule with
:func:`advcore.train.train` (55,000 images, 100k steps of batch 50 = 91 epochs, PGD 40 x
0.01, Adam 1e-4), checkpointing every epoch to ``--checkpoint`` (so it resumes when
restarted). That needs a GPU: on a CPU it takes days.

Usage::

    python benchmarks/bench_train.py                          # CPU, a few minutes
    python benchmarks/bench_train.py --threads 1              # steadier on a busy machine
    python benchmarks/bench_train.py --repeats 5 --examples 2000
    python benchmarks/bench_train.py --steps 7,40 --threads 1,2 --precisions float32,bfloat16
    python benchmarks/bench_train.py --device cuda --steps 40 --examples 10000 --precisions float32,bfloat16
    python benchmarks/bench_train.py --device cuda --full-schedule

Needs MNIST (``ADVCORE_DATA=../shared/data`` offline).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from advcore import attacks, data, train
from advcore.models import MadryCNN
from advcore.papers import MADRY_EPS as EPS
from advcore.papers import MADRY_STEP


def step_size_for(steps: int) -> float:
    """Madry et al.'s 0.01 for 40 steps; 2.5 * eps / steps for fewer (as the cpu/smoke profiles)."""
    return MADRY_STEP if steps == 40 else attacks.pgd_step_size(EPS, steps)


@contextlib.contextmanager
def other_layout(device: torch.device) -> Iterator[None]:
    """Inside the block advcore runs conv nets on ``device`` in the memory layout it does not
    pick by default (:data:`advcore.attacks.CHANNELS_LAST` flipped, restored on exit)."""
    default = attacks.CHANNELS_LAST.get(device.type, False)
    attacks.CHANNELS_LAST[device.type] = not default
    try:
        yield
    finally:
        attacks.CHANNELS_LAST[device.type] = default


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_advcore(model: nn.Module, x: Tensor, y: Tensor, args: argparse.Namespace,
                precision: str | None = None) -> None:
    objective = train.PGDObjective(eps=EPS, step_size=step_size_for(args.steps), steps=args.steps)
    train.train(model, TensorDataset(x, y), objective=objective, epochs=1, batch_size=args.batch_size,
                lr=1e-4, monitor=None, eval_train_examples=0, progress=False, device=args.device,
                precision=precision, seed=0)


def run_in_other_layout(model: nn.Module, x: Tensor, y: Tensor, args: argparse.Namespace) -> None:
    with other_layout(torch.device(args.device)):
        run_advcore(model, x, y, args)


def _reference(model: nn.Module, x: Tensor, y: Tensor, args: argparse.Namespace,
               attack: Callable[[nn.Module, Tensor, Tensor, torch.Generator], Tensor]) -> None:
    device = torch.device(args.device)
    model.to(device).train()
    x, y = x.to(device), y.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    generator = torch.Generator(device=device).manual_seed(1)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0)).to(device)
    for start in range(0, len(x), args.batch_size):
        index = order[start:start + args.batch_size]
        xb, yb = x[index], y[index]
        x_adv = attack(model, xb, yb, generator)
        loss = F.cross_entropy(model(x_adv), yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def run_reference(model: nn.Module, x: Tensor, y: Tensor, args: argparse.Namespace) -> None:
    def attack(model, xb, yb, generator):
        return attacks.pgd(model, xb, yb, eps=EPS, step_size=step_size_for(args.steps), steps=args.steps,
                           generator=generator)

    _reference(model, x, y, args, attack)


def run_reference_inline(model: nn.Module, x: Tensor, y: Tensor, args: argparse.Namespace) -> None:
    step_size = step_size_for(args.steps)

    def attack(model, xb, yb, generator):
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        lower, upper = (xb - EPS).clamp(min=0), (xb + EPS).clamp(max=1)
        noise = torch.empty_like(xb).uniform_(-EPS, EPS, generator=generator)
        x_adv = torch.clamp(xb + noise, lower, upper)
        for _ in range(args.steps):
            x_adv.requires_grad_(True)
            loss = F.cross_entropy(model(x_adv), yb)
            (grad,) = torch.autograd.grad(loss, x_adv)
            x_adv = torch.clamp(x_adv.detach() + step_size * grad.sign(), lower, upper)
        for p in model.parameters():
            p.requires_grad_(True)
        model.train()
        return x_adv

    _reference(model, x, y, args, attack)


def throughput(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    x, y = data.load_mnist("train", limit=args.examples).tensors
    torch.manual_seed(0)
    initial = MadryCNN().state_dict()
    runners: dict[str, Callable[..., None]] = {"advcore.train": run_advcore}
    for precision in args.precisions:
        if precision != "float32":
            runners[f"advcore.train {precision}"] = lambda *a, p=precision: run_advcore(*a, precision=p)
    runners["advcore.train other layout"] = run_in_other_layout
    runners.update({"bare loop": run_reference, "reference": run_reference_inline})
    warm = TensorDataset(x[: 2 * args.batch_size], y[: 2 * args.batch_size]).tensors
    for name, runner in runners.items():  # warm-up: allocator, kernels, cuDNN autotuning
        model = MadryCNN(relu_before_pool=name == "reference")
        model.load_state_dict(initial)
        runner(model, *warm, args)
    times: dict[str, list[float]] = {name: [] for name in runners}
    cpu_times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(args.repeats):
        for name, runner in runners.items():
            model = MadryCNN(relu_before_pool=name == "reference")
            model.load_state_dict(initial)
            synchronize(device)
            started, cpu_started = time.perf_counter(), time.process_time()
            runner(model, x, y, args)
            synchronize(device)
            times[name].append(time.perf_counter() - started)
            cpu_times[name].append(time.process_time() - cpu_started)

    print(f"# PGD training throughput: Madry CNN, PGD {args.steps} x {step_size_for(args.steps):.3g} at eps {EPS}, "
          f"batch {args.batch_size}, {args.examples} examples, {args.repeats} repeat(s), device {device}"
          )
    print(f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}"
          if hasattr(os, "getloadavg") else "")
    reference = statistics.median(times["reference"])
    reference_cpu = statistics.median(cpu_times["reference"])
    print("| loop | median wall s | examples / s | vs. reference (wall) | median CPU s | vs. reference (CPU) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, values in times.items():
        median, cpu = statistics.median(values), statistics.median(cpu_times[name])
        print(f"| {name} | {median:.2f} | {args.examples / median:,.0f} | {reference / median:.2f}x "
              f"| {cpu:.2f} | {reference_cpu / cpu:.2f}x |")


def full_schedule(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    if device.type != "cuda":
        print("warning: Madry et al.'s full schedule (100k PGD-40 steps) takes days on a CPU.")
    train_set = data.load_mnist("train", limit=55_000)
    torch.manual_seed(0)
    model = MadryCNN()
    objective = train.PGDObjective(eps=EPS, step_size=MADRY_STEP, steps=40)
    started = time.perf_counter()
    history = train.train(model, train_set, objective=objective, epochs=91, batch_size=50, lr=1e-4,
                          monitor=None, eval_train_examples=0, device=device, precision=args.precisions[-1],
                          checkpoint=args.checkpoint, description="Madry MNIST schedule")
    seconds = time.perf_counter() - started
    print(f"Madry MNIST schedule: {len(history.steps['step']):,} steps in {seconds / 3600:.2f} h on {device} "
          f"(this session; a resumed run counts only the time since resuming); "
          f"last-epoch training PGD accuracy {statistics.fmean(history.steps['adv_acc'][-1100:]):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--examples", type=int, default=1000, help="training examples per timed run")
    parser.add_argument("--steps", default="7", help="PGD steps per training step, comma-separated (Madry: 40)")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precisions", default="float32",
                        help="comma-separated: float32 (the default fast path), bfloat16, float16 (CUDA)")
    parser.add_argument("--full-schedule", action="store_true", help="time Madry et al.'s whole MNIST schedule")
    parser.add_argument("--checkpoint", default="madry_mnist_schedule.ckpt", help="checkpoint of --full-schedule")
    parser.add_argument("--threads", default=None, help="torch CPU threads, comma-separated (default: torch's)")
    args = parser.parse_args()
    args.precisions = args.precisions.split(",")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda, but CUDA is not available here.")
    print(f"# CPU: {cpu_description()}; bfloat16 native: {attacks.bfloat16_is_native(args.device)}")
    step_counts = [int(steps) for steps in args.steps.split(",")]
    for threads in (args.threads or str(torch.get_num_threads())).split(","):
        torch.set_num_threads(int(threads))
        for args.steps in step_counts:
            full_schedule(args) if args.full_schedule else throughput(args)


def cpu_description() -> str:
    """The processor's name and the vector extensions that matter for float32/bfloat16 speed."""
    flags = set()
    if os.path.exists("/proc/cpuinfo"):
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                flags = set(line.split(":")[1].split())
                break
    wanted = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{platform.processor() or platform.machine()} [{', '.join(wanted) or 'flags unknown'}], " \
           f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}"


if __name__ == "__main__":
    main()
