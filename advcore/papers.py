"""The papers' numbers the book quotes: one list, each with where it is written.

Every number a chapter, a note or the revision sheet shows as "the paper's" comes from
:data:`NUMBERS`, so that it is typed once and carries its source. The versions cited:

* Goodfellow, Shlens & Szegedy, *Explaining and Harnessing Adversarial Examples*, ICLR 2015
  (``goodfellow2015explaining``), read in its arXiv LaTeX source (arXiv:1412.6572v3). Sections:
  4 "Linear perturbation of non-linear models", 6 "Adversarial training of deep networks",
  7 "Different kinds of model capacity", 8 "Why do adversarial examples generalize?",
  9 "Alternative hypotheses"; Fig. 1 is the panda, Fig. 4 the epsilon sweep.
* Madry, Makelov, Schmidt, Tsipras & Vladu, *Towards Deep Learning Models Resistant to
  Adversarial Attacks*, ICLR 2018 (``madry2018towards``), cited in its ICLR 2018 conference
  text (headed "Published as a conference paper at ICLR 2018"; OpenReview ``rJzIBfZAb``), whose
  numbering the book uses. Every ``madry.*`` location below was checked against that text:
  Sec. 2 the saddle-point problem, equation (2.1); Sec. 3 FGSM and the PGD update rule
  (paragraph "Gradients from attacks"; Danskin's theorem, details in Appendix C); Sec. 4 the
  experiments: the MNIST and CIFAR10 training settings, Fig. 1 (cross-entropy on adversarial
  examples during training), Table 1 (MNIST), Table 2 (CIFAR10), Fig. 2 (accuracy against eps);
  Appendix A the landscape: Fig. 3 (loss over PGD iterations, 20 runs from random starts) and
  Fig. 4 (final losses of 10^5 restarts); Appendix B network capacity. The arXiv version
  (1706.06083) is a longer text, numbered differently (PGD in Sec. 2.1, the landscape in
  Sec. 3.1, the experiments in Sec. 5); do not mix the two.
* Papernot et al., *Practical Black-Box Attacks against Machine Learning*, AsiaCCS 2017
  (``papernot2017practical``): only its abstract is quoted, "We find that their DNN
  misclassifies 84.24% of the adversarial examples crafted with our substitute."
* MadryLab's released code: ``mnist_challenge/config.json`` and
  ``cifar10_challenge/config.json`` (``madrylab_challenges``), and the ``robustness``
  library's documentation (``engstrom2019robustness``) for the step-size rule.
* Croce & Hein 2020 (``croce2020reliable``) and their ``auto-attack`` README for AutoAttack's
  figure on Madry et al.'s MNIST model.
* Wong, Rice & Kolter 2020 (``wong2020fast``), Algorithm 1: the PGD adversarial-training box
  the lecture shows.

Usage::

    from advcore import papers
    papers.number("madry.mnist.pgd40").value   # 0.932
    papers.number("madry.mnist.pgd40").text    # "93.2%"
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

__all__ = ["ALPHA", "CIFAR_EPS", "MADRY_EPS", "MADRY_STEP", "MNIST_EPS", "PaperNumber", "NUMBERS", "number",
           "percent_texts", "cite"]


@dataclass(frozen=True)
class PaperNumber:
    """One number as a paper (or its released code) states it.

    Attributes:
        key: dotted name, ``"<paper>.<setting>.<what>"``, e.g. ``"madry.mnist.pgd40"``.
        value: a fraction for percentages (``0.932`` for 93.2%), else the raw number.
        text: as the book prints it, e.g. ``"93.2%"``.
        what: one line: what it measures.
        paper: BibTeX key in ``book/references.bib``.
        location: where it is written in the cited version (``"Table 1"``, ``"Sec. 6"``).
        chapter: the notebook stem where the book uses it.
    """

    key: str
    value: float
    text: str
    what: str
    paper: str
    location: str
    chapter: str


_GF = "goodfellow2015explaining"
_MADRY = "madry2018towards"
_CODE = "madrylab_challenges"

# (key, value, text, what, paper, location, chapter)
_ROWS: list[tuple[str, float, str, str, str, str, str]] = [
    # --- Goodfellow et al. 2015 -------------------------------------------------------------
    ("goodfellow.panda.eps", 0.007, "0.007",
     "FGSM eps on GoogLeNet: 'the magnitude of the smallest bit of an 8 bit image encoding after "
     "GoogLeNet's conversion to real numbers'", _GF, "Fig. 1 caption", "01_panda"),
    ("goodfellow.panda.clean_confidence", 0.577, "57.7%",
     "GoogLeNet's confidence in 'panda' on the clean image", _GF, "Fig. 1", "01_panda"),
    ("goodfellow.panda.sign_confidence", 0.082, "8.2%",
     "GoogLeNet's confidence in 'nematode' on sign(grad) classified on its own", _GF, "Fig. 1",
     "01_panda"),
    ("goodfellow.panda.adversarial_confidence", 0.993, "99.3%",
     "GoogLeNet's confidence in 'gibbon' on the adversarial image", _GF, "Fig. 1", "01_panda"),
    ("goodfellow.mnist.eps", 0.25, "0.25",
     "FGSM eps on MNIST (pixels in [0, 1])", _GF, "Sec. 4", "02_linear_explanation"),
    ("goodfellow.mnist.softmax_fgsm_error", 0.999, "99.9%",
     "FGSM (eps .25) error rate of a shallow softmax classifier on the MNIST test set", _GF,
     "Sec. 4", "02_linear_explanation"),
    ("goodfellow.mnist.softmax_fgsm_confidence", 0.793, "79.3%",
     "average confidence of that softmax classifier on the MNIST test set under FGSM (eps .25)",
     _GF, "Sec. 4", "02_linear_explanation"),
    ("goodfellow.mnist.maxout_fgsm_error", 0.894, "89.4%",
     "FGSM (eps .25) error rate of a maxout network on MNIST", _GF, "Sec. 4",
     "02_linear_explanation"),
    ("goodfellow.mnist.maxout_fgsm_confidence", 0.976, "97.6%",
     "average confidence of the maxout network on its FGSM (eps .25) examples", _GF, "Sec. 4",
     "02_linear_explanation"),
    ("goodfellow.cifar.eps", 0.1, "0.1",
     "FGSM eps on preprocessed CIFAR-10 (standard deviation about 0.5)", _GF, "Sec. 4",
     "02_linear_explanation"),
    ("goodfellow.cifar.maxout_fgsm_error", 0.8715, "87.15%",
     "FGSM (eps .1) error rate of a convolutional maxout network on preprocessed CIFAR-10", _GF,
     "Sec. 4", "02_linear_explanation"),
    ("goodfellow.cifar.maxout_fgsm_confidence", 0.966, "96.6%",
     "average probability that network assigns to the incorrect labels", _GF, "Sec. 4",
     "02_linear_explanation"),
    ("goodfellow.advtrain.alpha", 0.5, "0.5",
     "weight alpha of the clean term in the adversarial objective", _GF, "Sec. 6",
     "03_fgsm_adversarial_training"),
    ("goodfellow.advtrain.dropout_error", 0.0094, "0.94%",
     "MNIST test error of a maxout network with dropout, without adversarial training", _GF,
     "Sec. 6", "03_fgsm_adversarial_training"),
    ("goodfellow.advtrain.adversarial_error_clean", 0.0084, "0.84%",
     "MNIST test error of that maxout network with adversarial training", _GF, "Sec. 6",
     "03_fgsm_adversarial_training"),
    ("goodfellow.advtrain.units_large", 1600, "1600",
     "units per layer of the larger maxout network", _GF, "Sec. 6",
     "03_fgsm_adversarial_training"),
    ("goodfellow.advtrain.units_original", 240, "240",
     "units per layer of the original maxout network", _GF, "Sec. 6",
     "03_fgsm_adversarial_training"),
    ("goodfellow.advtrain.large_plain_error", 0.0114, "1.14%",
     "MNIST test error of the 1600-unit network without adversarial training", _GF, "Sec. 6",
     "03_fgsm_adversarial_training"),
    ("goodfellow.advtrain.mean_error", 0.00782, "0.782%",
     "mean test error of five adversarially trained runs (early stopping on adversarial "
     "validation error, retrained on all 60,000 examples)", _GF, "Sec. 6",
     "03_fgsm_adversarial_training"),
    ("goodfellow.advtrain.run_error", 0.0077, "0.77%",
     "test error of four of those five runs", _GF, "Sec. 6", "03_fgsm_adversarial_training"),
    ("goodfellow.advtrain.worst_run_error", 0.0083, "0.83%",
     "test error of the fifth run", _GF, "Sec. 6", "03_fgsm_adversarial_training"),
    ("goodfellow.advtrain.fgsm_error_before", 0.894, "89.4%",
     "FGSM error of the same kind of model without adversarial training", _GF, "Sec. 6",
     "03_fgsm_adversarial_training"),
    ("goodfellow.advtrain.fgsm_error_after", 0.179, "17.9%",
     "FGSM error of the adversarially trained maxout network", _GF, "Sec. 6",
     "03_fgsm_adversarial_training"),
    ("goodfellow.advtrain.mistake_confidence", 0.814, "81.4%",
     "average confidence of the adversarially trained model on the examples it misclassifies",
     _GF, "Sec. 6", "03_fgsm_adversarial_training"),
    ("goodfellow.advtrain.transfer_to_trained", 0.196, "19.6%",
     "error of the adversarially trained model on examples made on the original model", _GF,
     "Sec. 6", "03_fgsm_adversarial_training"),
    ("goodfellow.advtrain.transfer_to_original", 0.409, "40.9%",
     "error of the original model on examples made on the adversarially trained model", _GF,
     "Sec. 6", "03_fgsm_adversarial_training"),
    ("goodfellow.controls.sign_noise_error", 0.862, "86.2%",
     "FGSM error of a maxout network trained with +-eps random-sign noise", _GF, "Sec. 6",
     "04_control_experiments"),
    ("goodfellow.controls.sign_noise_confidence", 0.973, "97.3%",
     "its confidence on those FGSM examples", _GF, "Sec. 6", "04_control_experiments"),
    ("goodfellow.controls.uniform_noise_error", 0.904, "90.4%",
     "FGSM error of a maxout network trained with U(-eps, eps) noise", _GF, "Sec. 6",
     "04_control_experiments"),
    ("goodfellow.controls.uniform_noise_confidence", 0.978, "97.8%",
     "its confidence on those FGSM examples", _GF, "Sec. 6", "04_control_experiments"),
    ("goodfellow.rbf.fgsm_error", 0.554, "55.4%",
     "FGSM (eps .25) error of a shallow RBF network on MNIST", _GF, "Sec. 7",
     "06_transferability"),
    ("goodfellow.rbf.mistake_confidence", 0.012, "1.2%",
     "the RBF network's confidence on its mistakes", _GF, "Sec. 7", "06_transferability"),
    ("goodfellow.rbf.clean_confidence", 0.606, "60.6%",
     "the RBF network's average confidence on clean test examples", _GF, "Sec. 7",
     "06_transferability"),
    ("goodfellow.transfer.rbf_agrees_on_maxout_errors", 0.160, "16.0%",
     "on examples the maxout network misclassified, how often the RBF network predicted "
     "maxout's class", _GF, "Sec. 8", "06_transferability"),
    ("goodfellow.transfer.softmax_agrees_on_maxout_errors", 0.546, "54.6%",
     "on examples the maxout network misclassified, how often the softmax classifier predicted "
     "maxout's class", _GF, "Sec. 8", "06_transferability"),
    ("goodfellow.transfer.softmax_agrees_when_both_wrong", 0.846, "84.6%",
     "where both softmax regression and maxout make a mistake, how often softmax predicts "
     "maxout's class", _GF, "Sec. 8", "06_transferability"),
    ("goodfellow.transfer.rbf_agrees_when_both_wrong", 0.543, "54.3%",
     "where both the RBF network and maxout make a mistake, how often RBF predicts maxout's "
     "class", _GF, "Sec. 8", "06_transferability"),
    ("goodfellow.transfer.rbf_agrees_with_softmax", 0.536, "53.6%",
     "how often the RBF network predicts softmax regression's class", _GF, "Sec. 8",
     "06_transferability"),
    ("goodfellow.mpdbm.fgsm_error", 0.975, "97.5%",
     "FGSM (eps .25) error of the MP-DBM on the MNIST test set", _GF, "Sec. 9",
     "06_transferability"),
    ("goodfellow.ensemble.whole_error", 0.911, "91.1%",
     "error of an ensemble of 12 maxout networks on examples made against the whole ensemble",
     _GF, "Sec. 9", "06_transferability"),
    ("goodfellow.ensemble.member_error", 0.879, "87.9%",
     "error of that ensemble on examples made against one member", _GF, "Sec. 9",
     "06_transferability"),
    # --- Madry et al. 2018: settings --------------------------------------------------------
    ("madry.mnist.eps", 0.3, "0.3",
     "MNIST L-infinity radius", _MADRY, "Sec. 4 (MNIST)", "09_robust_training"),
    ("madry.mnist.train_steps", 40, "40",
     "PGD steps of the adversary used in MNIST training", _MADRY, "Sec. 4 (MNIST)",
     "09_robust_training"),
    ("madry.mnist.train_step_size", 0.01, "0.01",
     "PGD step size in MNIST training", _MADRY, "Sec. 4 (MNIST)", "09_robust_training"),
    ("madry.mnist.iterations", 100_000, "100,000",
     "MNIST training iterations (batch 50), per the released config", _CODE,
     "mnist_challenge/config.json (max_num_training_steps)", "09_robust_training"),
    ("madry.mnist.batch_size", 50, "50",
     "MNIST training batch size, per the released config", _CODE,
     "mnist_challenge/config.json (training_batch_size)", "09_robust_training"),
    ("madry.cifar.eps", 8 / 255, "8/255",
     "CIFAR-10 L-infinity radius (8 on the 0-255 scale)", _MADRY, "Sec. 4 (CIFAR10)",
     "09_robust_training"),
    ("madry.cifar.train_steps_paper", 7, "7",
     "PGD steps of the adversary used in CIFAR-10 training, per the paper", _MADRY,
     "Sec. 4 (CIFAR10)", "09_robust_training"),
    ("madry.cifar.train_steps_code", 10, "10",
     "PGD steps in CIFAR-10 training, per the released config", _CODE,
     "cifar10_challenge/config.json (num_steps)", "09_robust_training"),
    ("madry.cifar.train_step_size", 2 / 255, "2/255",
     "PGD step size in CIFAR-10 training (2 on the 0-255 scale; paper and released config)",
     _MADRY, "Sec. 4 (CIFAR10)", "09_robust_training"),
    ("madry.cifar.iterations", 80_000, "80,000",
     "CIFAR-10 training iterations (batch 128), per the released config", _CODE,
     "cifar10_challenge/config.json (max_num_training_steps)", "09_robust_training"),
    ("madry.cifar.batch_size", 128, "128",
     "CIFAR-10 training batch size, per the released config", _CODE,
     "cifar10_challenge/config.json (training_batch_size)", "09_robust_training"),
    ("madry.landscape.restarts", 100_000, "10^5",
     "uniformly random starting points in the eps-ball, PGD until the loss plateaus, per "
     "example (five MNIST and five CIFAR-10 examples)", _MADRY, "Appendix A, Fig. 4",
     "08_landscape"),
    ("madry.landscape.trace_restarts", 20, "20",
     "runs of PGD from uniformly random starts in the eps-ball around one example whose loss is "
     "traced over the iterations", _MADRY, "Appendix A, Fig. 3", "08_landscape"),
    # --- Madry et al. 2018: Table 1 (MNIST, eps = 0.3, accuracy) ----------------------------
    ("madry.mnist.natural", 0.988, "98.8%",
     "MNIST accuracy of the PGD-trained network on natural examples", _MADRY, "Table 1",
     "09_robust_training"),
    ("madry.mnist.fgsm", 0.956, "95.6%",
     "its accuracy under FGSM, white box (source A)", _MADRY, "Table 1", "10_threat_models"),
    ("madry.mnist.pgd40", 0.932, "93.2%",
     "its accuracy under PGD-40, one start, white box", _MADRY, "Table 1",
     "09_robust_training"),
    ("madry.mnist.pgd100", 0.918, "91.8%",
     "its accuracy under PGD-100, one start, white box", _MADRY, "Table 1",
     "10_threat_models"),
    ("madry.mnist.pgd40_restarts20", 0.904, "90.4%",
     "its accuracy under PGD-40 with 20 restarts, white box", _MADRY, "Table 1",
     "10_threat_models"),
    ("madry.mnist.pgd100_restarts20", 0.893, "89.3%",
     "its accuracy under PGD-100 with 20 restarts, white box", _MADRY, "Table 1",
     "10_threat_models"),
    ("madry.mnist.targeted40", 0.927, "92.7%",
     "its accuracy under targeted PGD-40, white box", _MADRY, "Table 1", "10_threat_models"),
    ("madry.mnist.cw40", 0.940, "94.0%",
     "its accuracy under CW: Carlini & Wagner's loss minimized with PGD, 40 steps, white box",
     _MADRY, "Table 1", "10_threat_models"),
    ("madry.mnist.cw_plus40", 0.939, "93.9%",
     "its accuracy under CW+: the CW loss with a high confidence parameter (kappa = 50), "
     "PGD-40, white box", _MADRY, "Table 1", "10_threat_models"),
    ("madry.mnist.transfer_a_prime.fgsm", 0.968, "96.8%",
     "its accuracy under FGSM made on A' (an independently initialized and trained copy of the "
     "network)", _MADRY, "Table 1", "10_threat_models"),
    ("madry.mnist.transfer_a_prime.pgd40", 0.960, "96.0%",
     "its accuracy under PGD-40 made on A'", _MADRY, "Table 1", "10_threat_models"),
    ("madry.mnist.transfer_a_prime.pgd100", 0.957, "95.7%",
     "its accuracy under PGD-100 (20 restarts) made on A'", _MADRY, "Table 1",
     "10_threat_models"),
    ("madry.mnist.transfer_a_prime.cw40", 0.970, "97.0%",
     "its accuracy under CW (PGD-40 on the CW loss) made on A'", _MADRY, "Table 1",
     "10_threat_models"),
    ("madry.mnist.transfer_a_prime.cw_plus40", 0.964, "96.4%",
     "its accuracy under CW+ (PGD-40) made on A'", _MADRY, "Table 1", "10_threat_models"),
    ("madry.mnist.transfer_b.fgsm", 0.954, "95.4%",
     "its accuracy under FGSM made on B (architecture B from Tramer et al. 2017a)",
     _MADRY, "Table 1", "10_threat_models"),
    ("madry.mnist.transfer_b.pgd40", 0.964, "96.4%",
     "its accuracy under PGD-40 made on B", _MADRY, "Table 1", "10_threat_models"),
    ("madry.mnist.transfer_b.cw_plus", 0.957, "95.7%",
     "its accuracy under CW+ made on B (the table lists no steps or restarts)", _MADRY,
     "Table 1", "10_threat_models"),
    # --- Madry et al. 2018: Table 2 (CIFAR-10, eps = 8/255, accuracy) -----------------------
    ("madry.cifar.natural", 0.873, "87.3%",
     "CIFAR-10 accuracy of the PGD-trained network on natural examples", _MADRY, "Table 2",
     "09_robust_training"),
    ("madry.cifar.fgsm", 0.561, "56.1%",
     "its accuracy under FGSM, white box", _MADRY, "Table 2", "09_robust_training"),
    ("madry.cifar.pgd7", 0.500, "50.0%",
     "its accuracy under PGD-7, white box", _MADRY, "Table 2", "09_robust_training"),
    ("madry.cifar.pgd20", 0.458, "45.8%",
     "its accuracy under PGD-20, white box", _MADRY, "Table 2", "09_robust_training"),
    ("madry.cifar.cw30", 0.468, "46.8%",
     "its accuracy under CW-30 (the CW loss minimized with PGD, 30 steps), white box", _MADRY,
     "Table 2", "09_robust_training"),
    ("madry.cifar.transfer_a_prime.fgsm", 0.670, "67.0%",
     "its accuracy under FGSM made on A' (an independently initialized and trained copy)",
     _MADRY, "Table 2", "10_threat_models"),
    ("madry.cifar.transfer_a_prime.pgd7", 0.642, "64.2%",
     "its accuracy under PGD-7 made on A'", _MADRY, "Table 2", "10_threat_models"),
    ("madry.cifar.transfer_a_prime.cw30", 0.787, "78.7%",
     "its accuracy under CW-30 made on A'", _MADRY, "Table 2", "10_threat_models"),
    ("madry.cifar.transfer_a_nat.fgsm", 0.856, "85.6%",
     "its accuracy under FGSM made on A_nat (a copy of the network trained on natural examples)",
     _MADRY, "Table 2", "10_threat_models"),
    ("madry.cifar.transfer_a_nat.pgd7", 0.860, "86.0%",
     "its accuracy under PGD-7 made on A_nat", _MADRY, "Table 2", "10_threat_models"),
    # --- black-box attacks ------------------------------------------------------------------
    ("papernot.metamind.substitute_fgsm", 0.8424, "84.24%",
     "share of the adversarial examples crafted on a substitute that MetaMind's remotely hosted DNN "
     "misclassifies", "papernot2017practical", "Abstract", "06_transferability"),
    # --- later work that measures Madry et al.'s model ----------------------------------------
    ("autoattack.madry_mnist", 0.8850, "88.50%",
     "accuracy of Madry et al.'s released MNIST model under AutoAttack at eps 0.3 (full test "
     "set; an earlier README version said 88.43%)", "croce2020reliable",
     "auto-attack README (2023), 'MNIST - Linf' table", "10_threat_models"),
    ("autoattack.madry_mnist_clean", 0.9853, "98.53%",
     "clean accuracy of that released MNIST model, as the same table lists it",
     "croce2020reliable", "auto-attack README (2023), 'MNIST - Linf' table",
     "10_threat_models"),
    ("autoattack.madry_mnist_reported", 0.8962, "89.62%",
     "robust accuracy of that released MNIST model at eps 0.3 as its authors reported it (the "
     "mnist_challenge leaderboard), as the same table lists it", "croce2020reliable",
     "auto-attack README (2023), 'MNIST - Linf' table", "11_evaluating_robustness"),
    ("autoattack.square_queries", 5000, "5,000",
     "queries per image of the Square Attack inside AutoAttack's standard version", "croce2020reliable",
     "Sec. 4 (AutoAttack)", "11_evaluating_robustness"),
    ("croce.apgd.first_checkpoint", 0.22, "22%",
     "APGD's first step-size checkpoint, as a share of the iteration budget", "croce2020reliable",
     "Sec. 3 (step-size selection)", "11_evaluating_robustness"),
    ("croce.apgd.rho", 0.75, "75%",
     "APGD halves its step when fewer than this share of the steps since the last checkpoint "
     "raised the loss (rho)", "croce2020reliable", "Sec. 3 (step-size selection)", "11_evaluating_robustness"),
    ("robustness.step_size_factor", 2.5, "2.5",
     "PGD step size 2.5 * eps / steps, the rule MadryLab's robustness library states for "
     "evaluating its pretrained models (not in Madry et al. 2018)", "engstrom2019robustness",
     "README, 'Pretrained models'", "01_panda"),
]

NUMBERS: dict[str, PaperNumber] = {row[0]: PaperNumber(*row) for row in _ROWS}
assert len(NUMBERS) == len(_ROWS), "duplicate key in advcore.papers._ROWS"

# The papers' settings the library trains and attacks with, read from the rows above (one home each).
#: Goodfellow et al. 2015, Sec. 4: FGSM eps on MNIST.
MNIST_EPS: float = NUMBERS["goodfellow.mnist.eps"].value
#: Goodfellow et al. 2015, Sec. 6: weight of the clean term, J~ = alpha J(x) + (1 - alpha) J(x_adv).
ALPHA: float = NUMBERS["goodfellow.advtrain.alpha"].value
#: Madry et al. 2018, Sec. 4 (MNIST): the L-infinity budget on MNIST.
MADRY_EPS: float = NUMBERS["madry.mnist.eps"].value
#: Madry et al. 2018, Sec. 4 (CIFAR10): the L-infinity budget on CIFAR-10 (8/255).
CIFAR_EPS: float = NUMBERS["madry.cifar.eps"].value
#: Madry et al. 2018, Sec. 4 (MNIST): the PGD step of MNIST training (0.01, with 40 steps).
MADRY_STEP: float = NUMBERS["madry.mnist.train_step_size"].value


def number(key: str) -> PaperNumber:
    """The paper number stored under ``key``.

    Raises:
        KeyError: if ``key`` is unknown; the message lists the closest known keys.
    """
    try:
        return NUMBERS[key]
    except KeyError:
        close = difflib.get_close_matches(key, NUMBERS, n=5, cutoff=0.5)
        hint = f" Close keys: {', '.join(close)}." if close else ""
        raise KeyError(f"no paper number {key!r} in advcore.papers.NUMBERS.{hint}") from None


_PERCENT = re.compile(r"^\d+(\.\d+)?%$")


def percent_texts() -> set[str]:
    """Every percentage text of :data:`NUMBERS` as the book prints it, e.g. ``{"93.2%", ...}``."""
    return {n.text for n in NUMBERS.values() if _PERCENT.match(n.text)}


def cite(key: str) -> str:
    """``"93.2% (Madry et al., Table 1)"``-style text for a page: the number and where it is."""
    n = number(key)
    who = {_GF: "Goodfellow et al.", _MADRY: "Madry et al.", _CODE: "MadryLab's released code",
           "papernot2017practical": "Papernot et al.",
           "croce2020reliable": "Croce & Hein", "engstrom2019robustness": "MadryLab's robustness"
           }.get(n.paper, n.paper)
    return f"{n.text} ({who}, {n.location})"
