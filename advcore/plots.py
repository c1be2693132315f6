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
