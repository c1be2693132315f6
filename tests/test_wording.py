"""The chapters' outcome sentences follow the numbers: each choice tested on both outcomes."""
import pytest

from advcore import wording


def test_compare_three_ways() -> None:
    assert wording.compare(0.5, 0.2) == "more"
    assert wording.compare(0.2, 0.5) == "less"
    assert wording.compare(0.50, 0.49, tolerance=0.02) == "about as much"
    with pytest.raises(ValueError, match="tolerance"):
        wording.compare(1, 2, tolerance=-1)


def test_versus_paper_direction() -> None:
    assert wording.versus_paper(0.97, "madry.mnist.pgd40").startswith("above the paper's 93.2%")
    assert wording.versus_paper(0.80, "madry.mnist.pgd40").startswith("below the paper's 93.2%")
    assert wording.versus_paper(0.93, "madry.mnist.pgd40").startswith("close to the paper's 93.2%")


def test_label_change_both_outcomes() -> None:
    assert "changes the label" in wording.label_change("panda", "gibbon", eps_text="1/255")
    assert wording.label_change("panda", "gibbon", eps_text="1/255", detail=" (x)").endswith("*gibbon* (x).")
    same = wording.label_change("panda", "panda", eps_text="1/255")
    assert "does not reproduce" in same and "changes the label" not in same


def test_paper_ordering_both_outcomes() -> None:
    kwargs = dict(first="the linear model", second="the maxout network", what="error")
    assert wording.paper_ordering(0.99, 0.9, **kwargs).startswith("As in the paper")
    assert wording.paper_ordering(0.8, 0.9, **kwargs).startswith("Unlike in the paper")
    assert "about the same" in wording.paper_ordering(0.9, 0.9, tolerance=0.01, **kwargs)


def test_ordering_holds_both_outcomes() -> None:
    names = ["noise-trained", "FGSM-trained"]
    assert "holds here" in wording.ordering_holds([0.9, 0.3], names=names, claim="c", margin=0.05)
    broken = wording.ordering_holds([0.3, 0.29], names=names, claim="c", margin=0.05)
    assert "does not hold" in broken and "noise-trained" in broken
    with pytest.raises(ValueError):
        wording.ordering_holds([0.1], names=["a"], claim="c")


def test_stays_wrong_three_outcomes() -> None:
    assert wording.stays_wrong([True, False, False]).startswith("once wrong, the answer stays wrong")
    assert "right again" in wording.stays_wrong([True, False, True])
    assert "never turns wrong" in wording.stays_wrong([True, True])


def test_linear_reference_verdict_both_outcomes() -> None:
    assert "as the linear-reference hypothesis predicts" in wording.linear_reference_verdict(0.6, 0.55, chance=0.11)
    assert "explains part" in wording.linear_reference_verdict(0.4, 0.7, chance=0.11)
    assert "does not support" in wording.linear_reference_verdict(0.15, 0.7, chance=0.11)


def test_black_box_verdict_both_directions() -> None:
    assert wording.black_box_verdict(0.9, 0.4, clean_error=0.02).startswith("Black box is weaker")
    assert "*stronger*" in wording.black_box_verdict(0.4, 0.6, clean_error=0.02)
    assert "barely raises" in wording.black_box_verdict(0.9, 0.05, clean_error=0.02)


def test_plateau_verdict_both_outcomes() -> None:
    assert "plateau" in wording.plateau_verdict(0.05) and "still climbing" not in wording.plateau_verdict(0.05)
    assert "still climbing" in wording.plateau_verdict(0.4)


def test_concentration_verdict_both_outcomes() -> None:
    restarts = {"plain": 1000, "PGD-trained": 1000}
    quiet = wording.concentration_verdict({"plain": (0, 0), "PGD-trained": (0, 0)}, {"plain": 0.1, "PGD-trained": 0.3},
                                          restarts=restarts)
    assert quiet.startswith("No restart stands out") and "30% (PGD-trained)" in quiet and quiet.endswith("either.")
    assert "much worse than what a typical PGD run finds" in quiet
    # no outlier on the log scale, yet the best restart at 4 times the median: not "no worse than typical"
    broad = wording.concentration_verdict({"plain": (0, 0), "PGD-trained": (0, 0)}, {"plain": 0.1, "PGD-trained": 3.0},
                                          restarts=restarts)
    assert broad.startswith("No restart is an outlier") and "300% (PGD-trained)" in broad
    assert "PGD-trained model the best of many restarts reaches 4.0 times" in broad and "plain model" not in broad
    assert "much worse than what a typical" not in broad and broad.endswith("either.")
    loud = wording.concentration_verdict({"plain": (0, 20), "PGD-trained": (3, 0)}, {"plain": 0.1, "PGD-trained": 2.0},
                                         restarts=restarts)
    assert loud.startswith("Some restarts stand out: 3 of 1,000 (PGD-trained) end far above")
    assert "(plain)" not in loud.split(" end far above")[0] and "2.00% (plain) of the restarts end far lower" in loud


def test_levels_off_reports_the_direction() -> None:
    assert "fell from 80.0% to 20.0% and had levelled off" in wording.levels_off(0.8, 0.2, previous=0.205)
    assert "still falling" in wording.levels_off(0.8, 0.2, previous=0.3)
    assert "rose" in wording.levels_off(0.2, 0.5, previous=0.5)
    assert wording.levels_off(0.8, 0.0, previous=0.0).endswith("at zero.")


def test_stronger_attack_both_directions() -> None:
    assert wording.stronger_attack("PGD", 0.3, "FGSM", 0.1).startswith("PGD is the stronger")
    assert wording.stronger_attack("PGD", 0.1, "FGSM", 0.3).startswith("FGSM is the stronger")
    assert "equally strong" in wording.stronger_attack("PGD", 0.1, "FGSM", 0.1)
    # a sentence: capitalized whichever lower-case name starts it
    assert wording.stronger_attack("transferred PGD", 0.1, "transferred FGSM", 0.3).startswith("Transferred FGSM is")


def test_hidden_layer_verdict_both_outcomes() -> None:
    assert "*does* gain" in wording.hidden_layer_verdict(0.05, 0.03)
    assert "does *not* gain" in wording.hidden_layer_verdict(0.05, 0.05)


def test_training_budget_says_how_a_run_compares_with_the_papers() -> None:
    assert wording.training_budget(33_000).startswith("33,000 weight updates, 33% of the 100,000 (MadryLab")
    assert wording.training_budget(400).startswith("400 weight updates, 0.4% of")  # a short run is not "0%"
    assert "about as many as the 100,000" in wording.training_budget(100_100)
    assert "2.0 times the 100,000" in wording.training_budget(200_000)
    with pytest.raises(ValueError, match="positive"):
        wording.training_budget(0)


def test_long_run_differences_from_the_runs_records() -> None:
    facts = dict(epochs=30, training_images=55_000, weight_updates=33_000, fast_start=1 / 3, pieces=20,
                 trained_on="cpu: x86_64 (2 cores)", precision="float32", fresh_optimizer_resumes=3,
                 evaluated_on={"natural": 10_000, "PGD-40": 10_000, "PGD-100, 20 restarts": 1_000})
    text = wording.long_run_differences(**facts)
    assert text.startswith("It trained for 30 epochs of 55,000 images, 33,000 weight updates, 33% of")
    assert "the first 33% of the epochs on one-step FGSM" in text and "3 of which resumed" in text
    assert text.endswith("evaluated on all 10,000 test images, except PGD-100, 20 restarts on 1,000.")
    plain = wording.long_run_differences(**{**facts, "fast_start": 0.0, "fresh_optimizer_resumes": 0,
                                            "evaluated_on": {"natural": 10_000}})
    assert "FGSM" not in plain and "each continuing from its predecessor's full checkpoint" in plain
    assert plain.endswith("evaluated on all 10,000 test images.")


def test_reevaluation_verdict_both_outcomes() -> None:
    agree = wording.reevaluation_verdict(0.905, 1_000, recorded=0.92, recorded_n=10_000, what="PGD-40")
    assert "within two standard errors" in agree and "(±1.7%)" in agree
    differ = wording.reevaluation_verdict(0.85, 1_000, recorded=0.92, recorded_n=10_000, what="PGD-40")
    assert "*outside*" in differ and "differ from what was recorded" in differ
