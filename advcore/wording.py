"""The words of the chapters' outcome sentences, picked from what the run measured.

A sentence that reports what happened is computed from what happened, including its
direction ("more", "less", "as in the paper", "unlike the paper"). The choice lives here, in
small functions of the measured numbers, so that it is tested on both outcomes
(``tests/test_wording.py``) instead of being typed into a notebook once.

Conventions: rates and accuracies are fractions in [0, 1]; functions return Markdown
fragments (a clause or whole sentences, ending with a full stop where they are sentences).
Paper numbers come from :mod:`advcore.papers` by key.

Example::

    from advcore import wording
    wording.versus_paper(0.91, "madry.mnist.pgd40")   # "below the paper's 93.2% (Madry et al., Table 1)"
"""
from __future__ import annotations

from collections.abc import Sequence

from advcore import papers

__all__ = [
    "compare",
    "versus_paper",
    "percent",
    "label_change",
    "paper_ordering",
    "ordering_holds",
    "stays_wrong",
    "linear_reference_verdict",
    "black_box_verdict",
    "plateau_verdict",
    "concentration_verdict",
    "levels_off",
    "stronger_attack",
    "hidden_layer_verdict",
    "training_budget",
    "long_run_differences",
    "reevaluation_verdict",
]


def percent(p: float, digits: int = 1) -> str:
    """``0.932 -> "93.2%"``."""
    return f"{100 * p:.{digits}f}%"


def compare(a: float, b: float, *, tolerance: float = 0.0,
            words: tuple[str, str, str] = ("more", "less", "about as much")) -> str:
    """The word for ``a`` relative to ``b``: ``words[0]`` if ``a > b + tolerance``,
    ``words[1]`` if ``a < b - tolerance``, else ``words[2]``."""
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}.")
    if a > b + tolerance:
        return words[0]
    if a < b - tolerance:
        return words[1]
    return words[2]


def versus_paper(ours: float, key: str, *, tolerance: float = 0.02) -> str:
    """``"close to" / "above" / "below" the paper's X (paper, location)`` for a measured fraction."""
    word = compare(ours, papers.number(key).value, tolerance=tolerance, words=("above", "below", "close to"))
    return f"{word} the paper's {papers.cite(key)}"


def label_change(clean_label: str, adversarial_label: str, *, eps_text: str, detail: str = "") -> str:
    """Chapter 1: did a step of size ``eps_text`` change the model's top label? ``detail`` is
    inserted before the closing full stop (e.g. ``" (confidence 97% before, 8% after)"``)."""
    if adversarial_label != clean_label:
        return (f"What reproduces is the phenomenon: a step of {eps_text} per pixel changes the label, "
                f"from *{clean_label}* to *{adversarial_label}*{detail}.")
    return (f"Here the phenomenon does not reproduce at this size: after a step of {eps_text} per pixel "
            f"the label is still *{clean_label}*{detail}.")


def paper_ordering(ours_first: float, ours_second: float, *, first: str, second: str,
                   what: str, tolerance: float = 0.0) -> str:
    """Whether ``first`` has a larger ``what`` than ``second`` here, as in the paper (where it does).

    ``"As in the paper, the linear model is fooled more often than the maxout network (99% vs 90%)."``
    """
    numbers = f"({percent(ours_first)} vs {percent(ours_second)})"
    if ours_first > ours_second + tolerance:
        return f"As in the paper, {first} has the larger {what} {numbers}."
    if ours_first < ours_second - tolerance:
        return f"Unlike in the paper, {first} has the smaller {what} here {numbers}."
    return f"Unlike in the paper, {first} and {second} have about the same {what} here {numbers}."


def ordering_holds(values: Sequence[float], *, names: Sequence[str], claim: str,
                   margin: float = 0.0) -> str:
    """Does ``values`` decrease strictly (each by more than ``margin``) along ``names``?

    Returns a sentence that says the claim ``claim`` holds here, or which step breaks it.
    """
    if len(values) != len(names) or len(values) < 2:
        raise ValueError("values and names need the same length, at least 2.")
    for (a, name_a), (b, name_b) in zip(zip(values, names), zip(values[1:], names[1:])):
        if not a > b + margin:
            return (f"The claim ({claim}) does not hold here: {name_a} ({percent(a)}) is not clearly above "
                    f"{name_b} ({percent(b)}).")
    return f"The claim ({claim}) holds here: " + " > ".join(
        f"{name} ({percent(v)})" for name, v in zip(names, values)) + "."


def stays_wrong(correct_along_line: Sequence[bool]) -> str:
    """Chapter 5: along ``eps > 0`` (in order), once the prediction is wrong, does it stay wrong?"""
    seen_wrong = False
    for correct in correct_along_line:
        if not correct:
            seen_wrong = True
        elif seen_wrong:
            return "the prediction turns wrong and then right again further along the line"
    return ("once wrong, the answer stays wrong for every larger ε" if seen_wrong
            else "the prediction never turns wrong on this half-line")


def linear_reference_verdict(linear: float, others: float, *, chance: float, tolerance: float = 0.05) -> str:
    """Chapter 6: does the linear model predict the deep models' wrong labels as the hypothesis says?

    ``linear``: mean rate at which softmax regression names a deep source's wrong label;
    ``others``: the same for the other deep models; ``chance``: the rate of random guessing.
    The hypothesis predicts ``linear`` far above chance and not below ``others``.
    """
    how = compare(linear, others, tolerance=tolerance, words=("more often than", "less often than", "about as often as"))
    sentence = (f"Across sources, the linear model names the deep models' wrong labels {how} the other deep "
                f"models do ({percent(linear, 0)} vs {percent(others, 0)} on average, chance about "
                f"{percent(chance, 0)}): ")
    if linear > 2 * chance and linear >= others - tolerance:
        return sentence + "as the linear-reference hypothesis predicts, a model with no hidden layer captures much of the shared behaviour."
    if linear > 2 * chance:
        return sentence + ("well above chance, but below the deep models: here the hypothesis explains part of "
                           "the shared wrong labels, not most of them.")
    return sentence + "not clearly above chance: this run does not support the linear-reference hypothesis."


def black_box_verdict(white_error: float, black_error: float, *, clean_error: float) -> str:
    """Chapter 6: black box (transfer) compared with white box, as victim error rates."""
    if black_error < white_error:
        strength = "Black box is weaker than white box here"
    elif black_error > white_error:
        strength = "Here black box is *stronger* than white box, a sign that the white-box attack is weak"
    else:
        strength = "Here black box and white box are equally strong"
    harm = (", but far from harmless" if black_error > clean_error + 0.1 else
            ", and it barely raises the error above the clean error")
    return f"{strength}{harm} ({percent(black_error)} vs {percent(white_error)}; clean {percent(clean_error)})."


def plateau_verdict(last_quarter_gain: float, *, threshold: float = 0.15) -> str:
    """Chapters 7 and 8: has the loss levelled off? ``last_quarter_gain``: share of a run's gain in
    loss made in its last quarter of steps."""
    if last_quarter_gain < threshold:
        return "the runs climb, then flatten onto a plateau"
    return "the runs are still climbing when they stop, so this step budget ends before the plateau"


def concentration_verdict(far_out: dict[str, tuple[int, int]], worst_excess: dict[str, float], *,
                          restarts: dict[str, int]) -> str:
    """Chapter 8: does any restart's final loss stand out? Per model: ``far_out[model]``, how many
    restarts end beyond the upper and the lower far-out fence (:func:`advcore.landscape.far_out_restarts`,
    summed over the images); ``worst_excess[model]``, the largest ``(max - median) / median`` over the
    images; ``restarts[model]``, how many restarts there were in all."""
    excess = " and ".join(f"{v:.0%} ({m})" for m, v in worst_excess.items())
    fence = "Tukey's far-out fence, judged on the log of the losses"
    above = {m: counts[0] for m, counts in far_out.items() if counts[0] > 0}
    # "much worse": the best restart more than half again the median loss (a relative measure, since
    # a robust model's losses can be 10^7 times smaller than a plain one's)
    several = {m: 1 + v for m, v in worst_excess.items() if v > 0.5}
    if not above and not several:
        sentence = (f"No restart stands out: none ends far above the rest (beyond {fence}), and the best restart "
                    f"exceeds the median by at most {excess} of the median, so no random start found a perturbation "
                    "much worse than what a typical PGD run finds.")
    elif not above:
        sentence = (f"No restart is an outlier: none ends far above the rest (beyond {fence}). But the best restart "
                    f"exceeds the median by up to {excess} of the median: "
                    + " and ".join(f"for the {m} model the best of many restarts reaches {k:.1f} times the typical "
                                   "loss" for m, k in several.items())
                    + ", yet inside the bulk on the log scale of the histograms.")
    else:
        sentence = ("Some restarts stand out: " + " and ".join(f"{n:,} of {restarts[m]:,} ({m})" for m, n in above.items())
                    + f" end far above the rest (beyond {fence}), and the best restart exceeds the median by up to "
                    f"{excess} of the median, so here a typical PGD run is not as good as the best of many.")
    below = {m: counts[1] for m, counts in far_out.items() if counts[1] > 0}
    if not below:
        return sentence + " None ends far below the rest either."
    return (sentence + " Below the bulk, " + " and ".join(f"{n / restarts[m]:.2%} ({m})" for m, n in below.items())
            + " of the restarts end far lower than the rest (beyond the lower fence): runs that stopped at a much "
            "lower maximum.")


def levels_off(first: float, last: float, *, previous: float, tolerance: float = 0.02) -> str:
    """A training curve: from ``first`` to ``last``; ``previous``: its value one window before the end.
    Says whether it fell, whether it is still falling, and whether it stays above zero."""
    direction = compare(last, first, tolerance=tolerance, words=("rose", "fell", "stayed about level"))
    still = compare(last, previous, tolerance=tolerance, words=("and was rising again at the end",
                                                               "and was still falling at the end",
                                                               "and had levelled off by the end"))
    zero = "above zero" if last > 0 else "at zero"
    return f"it {direction} from {percent(first)} to {percent(last)} {still}, {zero}."


def stronger_attack(name_a: str, error_a: float, name_b: str, error_b: float, *, tolerance: float = 0.0) -> str:
    """Which of two attacks found more adversarial examples (higher error of the victim): a sentence,
    capitalized whichever name starts it."""
    if error_a > error_b + tolerance:
        sentence = f"{name_a} is the stronger attack here ({percent(error_a)} vs {percent(error_b)} error)."
    elif error_a < error_b - tolerance:
        sentence = f"{name_b} is the stronger attack here ({percent(error_b)} vs {percent(error_a)} error)."
    else:
        sentence = (f"{name_a} and {name_b} are about equally strong here "
                    f"({percent(error_a)} vs {percent(error_b)} error).")
    return sentence[:1].upper() + sentence[1:]


def hidden_layer_verdict(plain_error: float, hidden_error: float, *, min_gain: float = 0.005) -> str:
    """Chapter 4: does hidden-layer FGSM training lower the sigmoid MLP's clean error?"""
    if hidden_error < plain_error - min_gain:
        return "Here the sigmoid network *does* gain from hidden-layer perturbation, as the lecture says."
    return "Here the sigmoid network does *not* gain from hidden-layer perturbation."


def training_budget(updates: int, *, key: str = "madry.mnist.iterations", tolerance: float = 0.05) -> str:
    """A training run's length beside the paper's, e.g. ``"33,000 weight updates, 33% of the 100,000 (...)"``.

    ``updates``: the run's weight updates (``advcore.zoo.training_steps``); ``key``: the paper's
    count (:mod:`advcore.papers`). Within ``tolerance`` (relative) it is "about as many as" theirs.
    """
    if updates <= 0:
        raise ValueError(f"updates must be positive, got {updates}.")
    share = updates / papers.number(key).value
    relation = compare(share, 1.0, tolerance=tolerance,
                       words=(f"{share:.1f} times", f"{100 * share:.2g}% of", "about as many as"))
    return f"{updates:,} weight updates, {relation} the {papers.cite(key)}"


def long_run_differences(*, epochs: int, training_images: int, weight_updates: int, fast_start: float,
                         pieces: int, trained_on: str, precision: str, fresh_optimizer_resumes: int,
                         evaluated_on: dict[str, int]) -> str:
    """Chapter 9: how a committed long CPU run differs from Madry et al.'s, from its records.

    ``fast_start``: share of the epochs trained on one-step FGSM (0: none); ``evaluated_on``:
    evaluation name -> test images (the largest count is the whole test set).
    """
    full = max(evaluated_on.values())
    fewer = {attack: images for attack, images in evaluated_on.items() if images < full}
    return (f"It trained for {epochs} epochs of {training_images:,} images, {training_budget(weight_updates)}"
            + (f"; the first {fast_start:.0%} of the epochs on one-step FGSM examples from a random start (Wong "
               "et al.'s fast training) instead of PGD-40" if fast_start else "")
            + f"; in {pieces} pieces on {trained_on} in {precision}, "
            + (f"{fresh_optimizer_resumes} of which resumed from the committed float16 weights with a fresh Adam "
               "optimizer (a new machine has no full checkpoint)" if fresh_optimizer_resumes else
               "each continuing from its predecessor's full checkpoint")
            + f". It is evaluated on all {full:,} test images"
            + ("" if not fewer else ", except " + " and ".join(f"{attack} on {n:,}" for attack, n in fewer.items()))
            + ".")


def reevaluation_verdict(accuracy: float, n: int, *, recorded: float, recorded_n: int, what: str) -> str:
    """Whether a committed model re-evaluated on ``n`` images agrees with its recorded accuracy
    (on ``recorded_n`` images): within two binomial standard errors of a rate measured on ``n``."""
    margin = 2 * (recorded * (1 - recorded) / n) ** 0.5
    agrees = abs(accuracy - recorded) <= margin
    return (f"{what} leaves the model {percent(accuracy)} accurate on the first {n:,} test images; the committed "
            f"evaluation on {recorded_n:,} images says {percent(recorded)}: "
            + ("within" if agrees else "*outside*")
            + f" two standard errors of a rate measured on {n:,} images (±{percent(margin)})"
            + ("." if agrees else ": the committed weights or the evaluation differ from what was recorded."))
