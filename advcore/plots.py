"""The book's figures (matplotlib + seaborn), readable at book width.

Chapters call these so that every figure shares one style: labelled axes, a colour-blind
safe palette, and sizes that stay legible at the rendered book's ~700 px text width.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

if TYPE_CHECKING:  # only for annotations: plotting needs no pandas import
    import pandas as pd

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


# --------------------------------------------------------------------------- chapters 1-3

CORRECT_COLOR = "#0072B2"  # colour-blind safe blue: the prediction is right
WRONG_COLOR = "#D55E00"  # colour-blind safe vermilion: the prediction is wrong


def fgsm_triptych(
    x: torch.Tensor,
    direction: torch.Tensor,
    x_adv: torch.Tensor,
    *,
    eps: float,
    captions: tuple[str, str, str],
    sign: str = "+",
) -> plt.Figure:
    """Goodfellow et al.'s Fig. 1 layout: ``x  + eps *  direction  =  x_adv``.

    Args:
        x, x_adv: images ``(C, H, W)`` in [0, 1].
        direction: the perturbation divided by ``eps``, values in [-1, 1] (shown as
            ``0.5 + 0.5 * direction``: grey is 0, white +1, black -1).
        eps: the step, printed between the first two panels.
        captions: one caption under each panel (label and confidence).
        sign: ``"+"`` (untargeted: up the loss) or ``"-"`` (targeted: down the target's loss).
    """
    fig = plt.figure(figsize=(BOOK_WIDTH_IN, 2.6))
    grid = fig.add_gridspec(1, 5, width_ratios=[1, 0.5, 1, 0.16, 1], wspace=0.0)
    panels = [fig.add_subplot(grid[0, i]) for i in (0, 2, 4)]
    shown = (x, (0.5 + 0.5 * direction).clamp(0, 1), x_adv)
    for ax, image, caption in zip(panels, shown, captions):
        show_image(ax, image)
        ax.set_xlabel(caption, fontsize=10)
    for column, text in ((1, f"{sign} {eps:g} ×"), (3, "=")):
        ax = fig.add_subplot(grid[0, column])
        ax.axis("off")
        ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=11)
    return fig


def image_rows(
    rows: list[torch.Tensor],
    *,
    row_labels: list[str] | None = None,
    captions: list[list[str]] | None = None,
    correct: list[list[bool]] | None = None,
    panel_in: float | None = None,
) -> plt.Figure:
    """Rows of images (e.g. clean above adversarial), each panel captioned with a prediction.

    Args:
        rows: one tensor ``(K, C, H, W)`` in [0, 1] per row; all rows have ``K`` images.
        row_labels: a label left of each row (e.g. ``"clean"``, ``"FGSM ε = 0.25"``).
        captions: a caption above each image (e.g. ``"7 (99%)"``).
        correct: per image, whether its prediction is right: blue captions if so, vermilion if
            not; ``None`` for a row (e.g. the clean images captioned with their label) keeps it black.
        panel_in: size of one panel in inches (default: the book width divided by ``K``).
    """
    n_rows, n_cols = len(rows), rows[0].shape[0]
    size = panel_in or BOOK_WIDTH_IN / (n_cols + (0.6 if row_labels else 0))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(size * n_cols + (0.6 if row_labels else 0),
                                                      size * n_rows * 1.25), squeeze=False)
    for r, images in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r][c]
            show_image(ax, images[c])
            if captions is not None:
                color = "black"
                if correct is not None and correct[r] is not None:
                    color = CORRECT_COLOR if correct[r][c] else WRONG_COLOR
                ax.set_title(captions[r][c], fontsize=9, color=color)
        if row_labels:
            axes[r][0].set_ylabel(row_labels[r], fontsize=10)
    return fig

# --------------------------------------------------------------------------- chapters 4-6

MANIFOLD_BOX_COLOR = "#F0E442"  # the yellow of Goodfellow et al.'s Fig. 4 boxes (colour-blind safe)


def logit_sweep(
    ax: plt.Axes,
    eps: Sequence[float],
    logits: torch.Tensor,
    *,
    true_class: int,
    class_names: Sequence[str] | None = None,
) -> None:
    """Goodfellow et al.'s Fig. 4 (left): every class's logit as ``eps`` varies.

    The true class is drawn thick and black; the eps values where the prediction is
    right are shaded, so the "thin manifold" of correct classification stands out.

    Args:
        eps: the ``K`` values of eps (increasing).
        logits: ``(K, num_classes)`` logits, one row per eps.
        true_class: the label of the example.
        class_names: a legend label per class (default: the class index).
    """
    eps_values = torch.as_tensor(list(eps), dtype=torch.float32)
    logits = logits.detach().cpu().float()
    names = list(class_names) if class_names is not None else [str(k) for k in range(logits.shape[1])]
    palette = sns.color_palette("tab10", logits.shape[1])
    for k in range(logits.shape[1]):
        is_true = k == true_class
        ax.plot(eps_values, logits[:, k], color="black" if is_true else palette[k],
                lw=2.6 if is_true else 1.4, zorder=3 if is_true else 2,
                label=f"{names[k]} (true)" if is_true else names[k])
    correct = (logits.argmax(1) == true_class).numpy()
    step = float(eps_values[1] - eps_values[0]) if len(eps_values) > 1 else 1.0
    for i in range(len(correct)):
        if correct[i]:
            ax.axvspan(float(eps_values[i]) - step / 2, float(eps_values[i]) + step / 2,
                       color=MANIFOLD_BOX_COLOR, alpha=0.35, lw=0, zorder=1)
    ax.axvline(0.0, color="0.4", lw=0.8, ls="--", zorder=1)
    ax.set_xlabel("ε  (input = x + ε · sign(∇ₓJ))")
    ax.set_ylabel("logit (argument to the softmax)")
    ax.legend(title="class", fontsize=8, title_fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0),
              frameon=False)


def image_grid(
    images: torch.Tensor,
    *,
    captions: Sequence[str] | None = None,
    boxed: Sequence[bool] | None = None,
    ncols: int = 10,
    box_color: str = MANIFOLD_BOX_COLOR,
    panel_in: float | None = None,
) -> plt.Figure:
    """A grid of images read row by row, some framed (Goodfellow et al.'s Fig. 4, right).

    Args:
        images: ``(K, C, H, W)`` in [0, 1] (values outside are clipped for display).
        captions: a small caption under each image (e.g. ``"ε=-0.3: 4"``).
        boxed: per image, whether to frame it (e.g. "classified correctly").
        ncols: images per row.
        box_color: the frame's colour.
        panel_in: size of one panel in inches (default: the book width divided by ``ncols``).
    """
    count = images.shape[0]
    nrows = -(-count // ncols)
    size = panel_in or BOOK_WIDTH_IN / ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows * (1.3 if captions else 1.0)),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= count:
            ax.axis("off")
            continue
        show_image(ax, images[i])
        if captions is not None:
            ax.set_xlabel(captions[i], fontsize=7, labelpad=2)
        if boxed is not None and boxed[i]:
            for spine in ax.spines.values():
                spine.set_visible(True)
                spine.set_color(box_color)
                spine.set_linewidth(3.0)
        else:
            for spine in ax.spines.values():
                spine.set_visible(False)
    return fig


def percent_heatmap(
    ax: plt.Axes,
    frame: "pd.DataFrame",
    *,
    title: str | None = None,
    xlabel: str | None = None,
    ylabel: str | None = None,
    cmap: str = "rocket_r",
    vmin: float = 0.0,
    vmax: float = 1.0,
) -> None:
    """A matrix of fractions (e.g. error rates) as an annotated heatmap in percent.

    Args:
        frame: a pandas DataFrame of values in [0, 1]; its index labels the rows and its
            columns the columns (NaN cells are left blank).
        vmin, vmax: the fractions at the two ends of the colour scale.
    """
    sns.heatmap(frame.astype(float), ax=ax, annot=frame.astype(float) * 100, fmt=".0f", cmap=cmap,
                vmin=vmin, vmax=vmax, cbar_kws={"label": "%", "format": _percent_formatter()},
                linewidths=0.5, linecolor="white", square=False, annot_kws={"fontsize": 9})
    ax.set_title(title or "")
    ax.set_xlabel(xlabel or "")
    ax.set_ylabel(ylabel or "")
    ax.tick_params(axis="x", labelrotation=30)
    ax.tick_params(axis="y", labelrotation=0)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")


def _percent_formatter():
    return FuncFormatter(lambda value, _: f"{100 * value:.0f}")


# --------------------------------------------------------------------------- chapters 7-10

PLAIN_COLOR = "#0072B2"  # Madry et al.'s Fig. 4: blue for the naturally trained network
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
    """Madry et al.'s Fig. 3 (the lecture's grid): loss over PGD iterations, one line per restart.

    Args:
        traces: ``(M, E, T, steps + 1)`` losses: ``M`` models (rows), ``E`` examples
            (columns), ``T`` random restarts (lines), iterations ``0 .. steps``.
        row_labels: one label per model (e.g. ``"plain"``, ``"PGD-trained"``); models whose
            label starts with "plain" are drawn blue, PGD-trained ones vermilion.
        column_titles: one title per example (e.g. ``"test image 0 (a 7)"``).

    Rows share their y-axis (a plain and a robust model's losses differ by orders of
    magnitude); all panels share the x-axis.
    """
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
    """Madry et al.'s Fig. 4: the final loss of every random restart, per example, models overlaid.

    Args:
        final_losses: ``(M, E, R)``: ``M`` models, ``E`` examples (panels), ``R`` restarts.
        model_labels: one per model (plain: blue, PGD-trained: vermilion).
        column_titles: one title per example.
        bins: histogram bins per panel, spaced evenly on a log scale.

    The x-axis is logarithmic, so a plain model's large losses and a robust model's small
    ones fit in one panel while each keeps its shape; the counts are logarithmic too, so a
    single outlying restart would still show as a bar.
    """
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

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0), numticks=8))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())
