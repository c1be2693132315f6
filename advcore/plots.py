"""The book's figures (matplotlib + seaborn), readable at book width.

Chapters call these so that every figure shares one style: labelled axes, a colour-blind
safe palette, and sizes that stay legible at the rendered book's ~700 px text width.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import seaborn as sns
import torch

BOOK_WIDTH_IN = 7.0  # inches; the rendered book's text column at 100 dpi


def use_book_style() -> None:
    """Seaborn's colour-blind palette on a white grid, with fonts sized for the book."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind", font_scale=0.95)
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 150, "figure.autolayout": True})


def show_image(ax: plt.Axes, image: torch.Tensor, *, title: str | None = None) -> None:
    """Draw one image ``(C, H, W)`` in [0, 1] (C = 1 or 3) on ``ax`` without ticks."""
    array = image.detach().cpu().clamp(0, 1)
    if array.shape[0] == 1:
        ax.imshow(array[0].numpy(), cmap="gray", vmin=0.0, vmax=1.0)
    else:
        ax.imshow(array.permute(1, 2, 0).numpy())
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    if title:
        ax.set_title(title, fontsize=10)


# --------------------------------------------------------------------------- chapters 7-10

from collections.abc import Sequence  # noqa: E402 (each chapter section keeps its own imports)

PLAIN_COLOR = "#0072B2"  # Madry et al.'s Fig. 1-2: blue for the standard network
ROBUST_COLOR = "#D55E00"  # and red (here colour-blind safe vermilion) for the adversarially trained one


def _model_color(label: str, index: int) -> str:
    if label.lower().startswith(("plain", "standard", "natural")):
        return PLAIN_COLOR
    if "pgd" in label.lower() or "robust" in label.lower() or "adv" in label.lower():
        return ROBUST_COLOR
    return sns.color_palette("colorblind")[index % 10]


def loss_traces_grid(
    traces: "Sequence | torch.Tensor",
    *,
    row_labels: Sequence[str],
    column_titles: Sequence[str] | None = None,
) -> plt.Figure:
    """Madry et al.'s Fig. 1 (the lecture's grid): loss over PGD iterations, one line per restart.

    Args:
        traces: ``(M, E, T, steps + 1)`` losses: ``M`` models (rows), ``E`` examples
            (columns), ``T`` random restarts (lines), iterations ``0 .. steps``.
        row_labels: one label per model (e.g. ``"plain"``, ``"PGD-trained"``); models whose
            label starts with "plain" are drawn blue, PGD-trained ones vermilion.
        column_titles: one title per example (e.g. ``"test image 0 (a 7)"``).

    Rows share their y-axis (a plain and a robust model's losses differ by orders of
    magnitude); all panels share the x-axis.
    """
    import numpy as np

    array = np.asarray(traces, dtype=float)
    n_models, n_examples = array.shape[:2]
    fig, axes = plt.subplots(n_models, n_examples, figsize=(BOOK_WIDTH_IN, 1.0 + 2.0 * n_models),
                             sharex=True, sharey="row", squeeze=False)
    iterations = np.arange(array.shape[-1])
    for m in range(n_models):
        color = _model_color(row_labels[m], m)
        for e in range(n_examples):
            ax = axes[m][e]
            ax.plot(iterations, array[m, e].T, color=color, alpha=0.5, lw=1.0)
            if m == 0 and column_titles is not None:
                ax.set_title(column_titles[e], fontsize=10)
            if m == n_models - 1:
                ax.set_xlabel("PGD iteration")
        axes[m][0].set_ylabel(f"{row_labels[m]}\ncross-entropy loss")
    return fig


def final_loss_histograms(
    final_losses: "Sequence | torch.Tensor",
    *,
    model_labels: Sequence[str],
    column_titles: Sequence[str] | None = None,
    bins: int = 40,
) -> plt.Figure:
    """Madry et al.'s Fig. 2: the final loss of every random restart, per example, models overlaid.

    Args:
        final_losses: ``(M, E, R)``: ``M`` models, ``E`` examples (panels), ``R`` restarts.
        model_labels: one per model (plain: blue, PGD-trained: vermilion).
        column_titles: one title per example.
        bins: histogram bins per panel, spaced evenly on a log scale.

    The x-axis is logarithmic, so a plain model's large losses and a robust model's small
    ones fit in one panel while each keeps its shape; the counts are logarithmic too, so a
    single outlying restart would still show as a bar.
    """
    import numpy as np

    array = np.asarray(final_losses, dtype=np.float64)
    n_models, n_examples = array.shape[:2]
    fig, axes = plt.subplots(1, n_examples, figsize=(BOOK_WIDTH_IN, 2.9), squeeze=False)
    floor = 1e-6  # cross-entropy is positive; float16 storage can round tiny losses to 0
    for e in range(n_examples):
        ax = axes[0][e]
        values = np.clip(array[:, e], floor, None)
        edges = np.geomspace(values.min() / 1.05, values.max() * 1.05, bins + 1)
        for m in range(n_models):
            ax.hist(values[m], bins=edges, color=_model_color(model_labels[m], m), alpha=0.65,
                    label=model_labels[m], log=True)
        ax.set_xscale("log")
        plain_log_ticks(ax.xaxis)
        plain_log_ticks(ax.yaxis)
        ax.set_xlabel("final loss (log scale)")
        if column_titles is not None:
            ax.set_title(column_titles[e], fontsize=10)
    axes[0][0].set_ylabel("restarts (log scale)")
    axes[0][0].legend(fontsize=8, loc="upper center")
    return fig


def plain_log_ticks(axis: "plt.Axis") -> None:
    """Label a log-scaled axis with plain numbers (0.5, 2, 100) instead of powers like 3×10⁰."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0), numticks=8))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())
