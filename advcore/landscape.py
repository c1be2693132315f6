"""The landscape of the inner maximization: PGD from many random starts (Madry et al. 2018, App. A).

Madry et al. restart PGD from 10^5 uniformly random points of the L-infinity ball around
an example and find that the final losses are concentrated, without outliers, and that
the loss plateaus within a few iterations. :func:`pgd_landscape` reproduces that
experiment for one or several examples: all restarts of all examples are flattened into
rows, and rows are attacked together in chunks (one forward pass per chunk and step)
whose size follows a memory budget. :func:`distinct_maxima` answers the lecture's
exercise "how to check for distinct maxima?": compare the final perturbations
(cosine similarity, distances), count clusters, and look at the spread of the losses.

Example::

    from advcore.landscape import pgd_landscape, distinct_maxima
    result = pgd_landscape(model, x[:5], y[:5], eps=0.3, step_size=0.01, steps=100,
                           restarts=100_000, generator=torch.Generator().manual_seed(0))
    result.final_losses        # (5, 100000): histogram per example
    result.traces              # (5, 20, 101): loss over iterations of 20 restarts
    distinct_maxima(result, example=0).n_clusters
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from advcore.attacks import (
    LossFn,
    attack_mode,
    autocast,
    compile_enabled,
    compiled,
    fast_memory_format,
    linf_box,
    logits_and_loss,
    pgd_iterate,
    preferred_memory_format,
)
from advcore.checks import check_int, check_number, check_pgd_inputs

__all__ = ["DistinctMaxima", "Landscape", "cluster_perturbations", "distinct_maxima", "far_out_restarts",
           "pgd_landscape"]

#: Rows of random starts drawn per call, so that the numbers depend on the seed only,
#: not on the chunk size (hence not on the memory budget or the machine).
_NOISE_BLOCK = 1024


@dataclass(frozen=True)
class Landscape:
    """Result of :func:`pgd_landscape` for ``E`` examples and ``R`` restarts each (CPU tensors).

    Attributes:
        final_losses: ``(E, R)`` loss at the last PGD iterate of every restart.
        final_predictions: ``(E, R)`` class predicted at the last iterate (int64).
        traces: ``(E, T, steps + 1)`` loss at iterates ``0`` (the random start) to ``steps``
            of restarts ``0 .. T-1`` (``T = traced``); ``traces[..., -1] == final_losses[:, :T]``.
        final_deltas: ``(E, K, *x.shape[1:])`` final perturbations ``x_adv - x`` of
            restarts ``0 .. K-1`` (``K = keep_deltas``), or ``None`` when ``K = 0``.
        labels: ``(E,)`` the labels attacked.
        eps, step_size, steps: the PGD settings.
        chunk_size: rows (example, restart pairs) per forward pass that were used.
    """

    final_losses: Tensor
    final_predictions: Tensor
    traces: Tensor
    final_deltas: Tensor | None
    labels: Tensor
    eps: float
    step_size: float
    steps: int
    chunk_size: int

    @property
    def restarts(self) -> int:
        return self.final_losses.shape[1]

    def loss_spread(self) -> dict[str, Tensor]:
        """Per-example statistics of the final losses: each value has shape ``(E,)``."""
        losses = self.final_losses.double()
        quantiles = torch.quantile(losses, torch.tensor([0.05, 0.5, 0.95], dtype=losses.dtype), dim=1)
        return {
            "min": losses.min(1).values, "q05": quantiles[0], "median": quantiles[1],
            "q95": quantiles[2], "max": losses.max(1).values, "mean": losses.mean(1),
            "std": losses.std(1) if losses.shape[1] > 1 else torch.zeros(losses.shape[0], dtype=losses.dtype),
        }


def far_out_restarts(final_losses: Tensor | np.ndarray) -> tuple[int, int]:
    """How many restarts end far from the bulk of one example's final losses: ``(above, below)``.

    Madry et al. (2018, App. A) find the final losses of 10^5 restarts "concentrated without
    extreme outliers". An extreme outlier here is Tukey's (1977) "far out" value: beyond the
    upper quartile plus three interquartile ranges (or the lower quartile minus three), judged
    on the *logarithm* of the losses, because losses are positive, skewed towards zero and a
    robust model's lie orders of magnitude below a plain one's. (The paper judges by eye, from
    Fig. 4's histograms: "Loss value" on a linear axis, 0 to 160 on MNIST, against
    "log(frequency)".) For log-normal losses the upper fence is 4.7 standard deviations out:
    about one restart in 10^6 crosses it by chance.

    ``final_losses``: ``(R,)`` final losses of ``R`` restarts of one example (``R >= 4``). Losses
    of exactly 0 (float32 underflow of a very confident prediction) count as the smallest float32.
    """
    losses = torch.as_tensor(np.asarray(final_losses), dtype=torch.float64).flatten()
    if losses.numel() < 4:
        raise ValueError(f"far_out_restarts needs at least 4 final losses to have quartiles; got {losses.numel()}.")
    if not torch.isfinite(losses).all() or (losses < 0).any():
        raise ValueError("far_out_restarts: final losses must be finite and >= 0 (cross-entropy values).")
    logs = losses.clamp_min(torch.finfo(torch.float32).tiny).log()
    q1, q3 = torch.quantile(logs, torch.tensor([0.25, 0.75], dtype=logs.dtype))
    spread = q3 - q1
    return int((logs > q3 + 3 * spread).sum()), int((logs < q1 - 3 * spread).sum())


def pgd_landscape(
    model: Callable[[Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    step_size: float,
    steps: int,
    restarts: int,
    traced: int = 20,
    keep_deltas: int = 256,
    loss_fn: LossFn | None = None,
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
    memory_budget: int | None = None,
    progress: bool = True,
    precision: str | None = None,
) -> Landscape:
    """PGD from ``restarts`` uniformly random starts per example (Madry et al. 2018, App. A, Fig. 3-4).

    Each restart is :func:`advcore.attacks.pgd` with ``restarts=1`` (PGD with random
    start, untargeted), run on all restarts at once: rows ``(example, restart)`` are
    processed in chunks of ``chunk_size`` rows, one forward and one backward pass per
    chunk and step. The random starts are drawn row by row in a fixed order and block
    size, so a seeded ``generator`` gives the same starts whatever the chunk size.

    Args:
        model: maps images in [0, 1] to logits ``(N, num_classes)``.
        x: float images ``(E, C, H, W)`` in [0, 1], the examples to explore.
        y: class indices ``(E,)``.
        eps, step_size, steps: PGD settings (Madry et al., MNIST: eps 0.3 and 100 iterations in
            their Fig. 3; no step size stated for this experiment, 0.01 in training).
        restarts: random starts per example (Madry et al.: 10^5).
        traced: restarts per example whose loss is recorded at every iteration (lecture: 20).
        keep_deltas: restarts per example whose final perturbation is kept (for
            :func:`distinct_maxima`); memory ``E * keep_deltas * C * H * W`` floats.
        loss_fn: per-example loss ``(logits, y) -> (N,)``; default cross-entropy (its gradient in
            float32, as in :func:`advcore.attacks.pgd`; the losses recorded in float64, then stored as
            float32, so that a robust model's tiny losses do not round to 0).
        generator: ``torch.Generator`` (CPU or CUDA) for reproducible starts.
        chunk_size: rows per forward pass; default: from ``memory_budget``.
        memory_budget: bytes the activations of a chunk may take; default half the free
            GPU memory on CUDA, 256 MiB on the CPU. Rows per chunk are estimated from the
            sizes of the model's layer outputs for one example (a heuristic).
        progress: show a tqdm progress bar (example-steps).
        precision: arithmetic of the forward and backward passes, see
            :func:`advcore.attacks.autocast` (``None``: float32; ``"bfloat16"``: faster where
            the hardware has it, a different but equally valid set of maxima).

    Speed: a conv net runs channels-last (:func:`advcore.attacks.fast_memory_format`).

    Returns:
        A :class:`Landscape` with CPU tensors.
    """
    x, y, eps, step_size, steps, restarts = check_pgd_inputs(x, y, eps=eps, step_size=step_size, steps=steps,
                                                             restarts=restarts)
    traced = min(check_int(traced, "traced", minimum=0), restarts)
    keep_deltas = min(check_int(keep_deltas, "keep_deltas", minimum=0), restarts)
    examples, total = x.shape[0], x.shape[0] * restarts
    loss_fn = _cross_entropy_recorded_in_float64 if loss_fn is None else loss_fn
    if chunk_size is None:
        chunk_size = _chunk_size_for_budget(model, x, memory_budget)
    chunk_size = min(check_int(chunk_size, "chunk_size", minimum=1), total)
    chunk_size = math.ceil(total / math.ceil(total / chunk_size))  # equal chunks, none tiny

    final_losses = torch.empty(total)
    final_predictions = torch.empty(total, dtype=torch.long)
    traces = torch.empty(examples, traced, steps + 1)
    deltas = torch.empty(examples, keep_deltas, *x.shape[1:], dtype=x.dtype) if keep_deltas else None
    starts = _StartStream(x[0], eps, generator)
    lower_all, upper_all = linf_box(x, eps)
    bar = tqdm(total=total * steps, unit="example-step", unit_scale=True, disable=not progress,
               desc=f"PGD landscape ({restarts:,} restarts)")
    memory_format = preferred_memory_format(model, x)
    forward = compiled(model) if compile_enabled(x.device) else model
    with attack_mode(model), fast_memory_format(model, x), autocast(precision, x.device), bar:
        for begin in range(0, total, chunk_size):
            end = min(begin + chunk_size, total)
            rows = torch.arange(begin, end, device=x.device)
            example, restart = rows // restarts, rows % restarts
            lower, upper = lower_all[example], upper_all[example]
            x_adv = torch.clamp(x[example] + starts.take(end - begin).to(x.device), lower, upper)
            x_adv = x_adv.to(memory_format=memory_format)  # .to, not .contiguous: see fast_memory_format
            trace = torch.empty(steps + 1, end - begin, device=x.device)

            def record(step: int, losses: Tensor, _x_step: Tensor) -> None:
                trace[step] = losses
                bar.update(end - begin)

            x_adv, _ = pgd_iterate(forward, x_adv, y[example], lower, upper, step_size=step_size,
                                steps=steps, direction=1.0, loss_fn=loss_fn, on_step=record)
            with torch.no_grad():
                logits, losses = logits_and_loss(forward, x_adv, y[example], loss_fn, check=False)
            trace[steps] = losses
            final_losses[begin:end] = losses.float().cpu()
            final_predictions[begin:end] = logits.argmax(1).cpu()
            _store_subset(traces, trace.T, example, restart, traced)
            if deltas is not None:
                _store_subset(deltas, x_adv - x[example], example, restart, keep_deltas)
    return Landscape(
        final_losses=final_losses.view(examples, restarts),
        final_predictions=final_predictions.view(examples, restarts),
        traces=traces, final_deltas=deltas, labels=y.cpu(),
        eps=eps, step_size=step_size, steps=steps, chunk_size=chunk_size,
    )


def _store_subset(out: Tensor, values: Tensor, example: Tensor, restart: Tensor, first: int) -> None:
    """``out[e, r] = values[row]`` for the chunk's rows with ``restart < first``."""
    keep = restart < first
    if bool(keep.any()):
        out[example[keep].cpu(), restart[keep].cpu()] = values[keep].detach().to(out.dtype).cpu()


def _cross_entropy_recorded_in_float64(logits: Tensor, y: Tensor) -> Tensor:
    """Per-example cross-entropy ``(N,)`` whose *value* is computed in float64 and whose *gradient* is
    float32 cross-entropy's, bit for bit (so the attack is :func:`advcore.attacks.pgd`'s).

    Why: a well-trained robust model's loss under PGD can sit below float32's resolution near 1
    (``log(1 + x)`` rounds to 0 for ``x`` below about 6e-8, and to multiples of 1.19e-7 above), so
    float32 records many restarts at exactly 0 and the histogram of Madry et al.'s App. A loses
    its shape. The float32 logits hold the information; only the recorded value needs float64.
    """
    loss32 = F.cross_entropy(logits, y, reduction="none")
    loss64 = F.cross_entropy(logits.detach().double(), y, reduction="none")
    return loss32 + (loss64 - loss32.detach())  # value: loss64; gradient: loss32's


class _StartStream:
    """Uniform ``[-eps, eps]`` starts for consecutive rows, drawn in fixed-size blocks."""

    def __init__(self, example: Tensor, eps: float, generator: torch.Generator | None) -> None:
        self.shape, self.eps, self.generator = example.shape, eps, generator
        self.device = generator.device if generator is not None else example.device
        self.dtype = example.dtype
        self.block: Tensor | None = None
        self.used = _NOISE_BLOCK

    def take(self, rows: int) -> Tensor:
        parts = []
        while rows > 0:
            if self.used == _NOISE_BLOCK:
                self.block = torch.empty(_NOISE_BLOCK, *self.shape, dtype=self.dtype, device=self.device)
                self.block.uniform_(-self.eps, self.eps, generator=self.generator)
                self.used = 0
            count = min(rows, _NOISE_BLOCK - self.used)
            parts.append(self.block[self.used:self.used + count])
            self.used += count
            rows -= count
        return torch.cat(parts)


def _chunk_size_for_budget(model: Callable[[Tensor], Tensor], x: Tensor, memory_budget: int | None) -> int:
    """Rows per chunk so that activations (estimated from one example's layer outputs) fit the budget."""
    if memory_budget is None:
        if x.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(x.device)
            memory_budget = free // 2
        else:  # a CPU gains nothing from huge chunks, and their fresh memory costs page faults
            memory_budget = 256 * 1024**2
    memory_budget = check_int(memory_budget, "memory_budget", minimum=1)
    return max(1, memory_budget // _bytes_per_row(model, x[:1]))


def _bytes_per_row(model: Callable[[Tensor], Tensor], x: Tensor) -> int:
    """Heuristic memory of one row during a PGD step: 2x the leaf layers' outputs + 8 input copies.

    The factor 2 covers what autograd saves for the backward pass and the gradients
    flowing back; the input copies are the iterate, its gradient, its sign, the box
    bounds, the start and the clean image.
    """
    sizes: list[int] = []
    hooks = []
    if isinstance(model, nn.Module):
        for module in model.modules():
            if not any(True for _ in module.children()):
                hooks.append(module.register_forward_hook(
                    lambda _m, _i, out: sizes.append(out.numel() * out.element_size())
                    if isinstance(out, Tensor) else None))
    try:
        with attack_mode(model), torch.no_grad():
            logits = model(x)
    finally:
        for hook in hooks:
            hook.remove()
    activations = sum(sizes) if sizes else 64 * logits.numel() * logits.element_size()
    return 2 * activations + 8 * x.numel() * x.element_size()


# --------------------------------------------------------------------------- distinct maxima


@dataclass(frozen=True)
class DistinctMaxima:
    """Are the maxima PGD finds from different starts distinct? (lecture exercise, Madry et al. App. A).

    Attributes:
        cosine: ``(K, K)`` cosine similarity between the flattened final perturbations.
        mean_abs_distance: ``(K, K)`` mean over pixels of ``|delta_i - delta_j|``, divided by
            ``eps`` (0: same point; 2: opposite corners of the box everywhere).
        linf_distance: ``(K, K)`` ``max |delta_i - delta_j|``.
        clusters: ``(K,)`` cluster of each perturbation: connected components of the
            graph "cosine >= threshold" (single linkage).
        n_clusters: number of clusters; ``> 1`` means PGD found distinct maxima.
        cluster_sizes: sizes, largest first.
        cluster_mean_loss: mean final loss per cluster, in the order of ``cluster_sizes``.
        n_predicted_classes: distinct classes predicted at the final iterates of all restarts.
        loss_spread: min, q05, median, q95, max, mean, std of the final losses of all restarts.
        threshold: the cosine threshold used.
    """

    cosine: Tensor
    mean_abs_distance: Tensor
    linf_distance: Tensor
    clusters: Tensor
    n_clusters: int
    cluster_sizes: list[int]
    cluster_mean_loss: list[float]
    n_predicted_classes: int
    loss_spread: dict[str, float]
    threshold: float


def distinct_maxima(result: Landscape, example: int = 0, *, threshold: float = 0.9) -> DistinctMaxima:
    """Check whether the restarts of ``example`` ended at distinct maxima.

    One way to answer the lecture's exercise: two restarts reached the same maximum when
    their final perturbations nearly coincide. PGD with sign steps ends near corners of
    the box, so the cosine similarity of the final perturbations is near 1 for the same
    corner and much lower for different ones. Perturbations are grouped by single linkage
    on ``cosine >= threshold``; several large clusters with similar losses mean several
    distinct maxima of (nearly) equal value, as Madry et al. observe. Compare with the
    spread of the final losses over *all* restarts and the number of predicted classes.

    Args:
        result: from :func:`pgd_landscape` with ``keep_deltas >= 2``.
        example: which example (row of ``result.final_losses``).
        threshold: cosine similarity above which two perturbations are "the same maximum".

    Caveat: pixels at 0 or 1 can only move one way, which raises the cosine of unrelated
    perturbations (MNIST's black background); inspect ``mean_abs_distance`` as well.
    """
    if result.final_deltas is None or result.final_deltas.shape[1] < 2:
        raise ValueError("distinct_maxima needs the final perturbations: run pgd_landscape with keep_deltas >= 2.")
    if not 0 <= example < result.final_losses.shape[0]:
        raise ValueError(f"example must be in [0, {result.final_losses.shape[0]}), got {example}.")
    deltas = result.final_deltas[example].flatten(1).double()
    losses = result.final_losses[example, : deltas.shape[0]]
    clusters = cluster_perturbations(deltas, threshold=threshold)
    counts = torch.bincount(clusters)
    order = torch.argsort(counts, descending=True, stable=True)
    spread = {name: float(value[example]) for name, value in result.loss_spread().items()}
    return DistinctMaxima(
        cosine=_cosine_matrix(deltas).float(),
        mean_abs_distance=(torch.cdist(deltas, deltas, p=1) / (deltas.shape[1] * result.eps)).float()
        if result.eps > 0 else torch.zeros(deltas.shape[0], deltas.shape[0]),
        linf_distance=torch.cdist(deltas, deltas, p=float("inf")).float(),
        clusters=clusters,
        n_clusters=int(counts.numel()),
        cluster_sizes=[int(counts[c]) for c in order],
        cluster_mean_loss=[float(losses[clusters == c].mean()) for c in order],
        n_predicted_classes=int(result.final_predictions[example].unique().numel()),
        loss_spread=spread,
        threshold=threshold,
    )


def cluster_perturbations(deltas: Tensor, *, threshold: float = 0.9) -> Tensor:
    """Single-linkage clusters of perturbations ``(K, ...)`` under ``cosine >= threshold``.

    Returns ``(K,)`` int64 cluster ids ``0, 1, ...`` in order of first appearance.
    A zero perturbation has cosine 0 with everything (its own cluster unless identical).
    """
    threshold = check_number(threshold, "threshold", minimum=-1.0)
    flat = deltas.detach().flatten(1).double().cpu()
    adjacent = (_cosine_matrix(flat) >= threshold).numpy()
    identical = torch.cdist(flat, flat, p=float("inf")).numpy() == 0
    adjacent |= identical
    labels = np.full(flat.shape[0], -1, dtype=np.int64)
    for seed in range(flat.shape[0]):
        if labels[seed] >= 0:
            continue
        labels[seed] = cluster = labels.max() + 1
        frontier = [seed]
        while frontier:  # breadth-first over the similarity graph
            node = frontier.pop()
            new = np.flatnonzero(adjacent[node] & (labels < 0))
            labels[new] = cluster
            frontier.extend(new.tolist())
    return torch.from_numpy(labels)


def _cosine_matrix(flat: Tensor) -> Tensor:
    norms = flat.norm(dim=1, keepdim=True)
    unit = flat / norms.clamp_min(torch.finfo(flat.dtype).tiny)
    return unit @ unit.T
