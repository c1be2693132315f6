"""Long runs in committed pieces (advcore.longrun): resume exactly on one machine, resume from
the committed files alone on another, and never use a damaged or foreign file.

The runs here are the smoke profile's softmax regression (two epochs of 1,000 images), so a
piece takes a second; the paper-scale runs use the same code with the ``gpu`` recipes.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch

from advcore import longrun, storage, zoo


@pytest.fixture()
def tiny_run(monkeypatch, tmp_path):
    """A two-epoch run registered as ``tiny``, results in a temporary folder, its own cache."""
    monkeypatch.setitem(longrun.RUNS, "tiny", longrun.Run("softmax", profile="smoke"))
    monkeypatch.setattr(longrun, "_cache_checkpoint", lambda name, key: tmp_path / "cache" / f"{name}-{key[:8]}.ckpt")
    return tmp_path / "results"


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_two_pieces_equal_one_uninterrupted_run(tiny_run) -> None:
    first = longrun.run_piece("tiny", epochs=1, root=tiny_run, progress=False)
    assert first["epochs"] == [1, 1] and longrun.load_state("tiny", root=tiny_run)["epochs_done"] == 1
    second = longrun.run_piece("tiny", epochs=5, root=tiny_run, progress=False)
    assert second["epochs"] == [2, 2]  # clipped to the recipe's 2 epochs
    assert longrun.run_piece("tiny", epochs=1, root=tiny_run, progress=False) == {"finished": True}

    rec = zoo.recipe("softmax", profile="smoke")
    train_set, options = zoo.training_options(rec, zoo.current_profile("smoke"))
    reference = zoo.initial_model(rec)
    from advcore import train

    reference_history = train.train(reference, train_set, **options, progress=False)
    committed = longrun.load_weights("tiny", root=tiny_run)
    for name, value in weights(reference).items():  # the committed copy is float16
        assert torch.equal(value.half().float(), committed.state_dict()[name]), name
    history = longrun.history("tiny", root=tiny_run)
    assert history.steps["loss"] == pytest.approx(reference_history.steps["loss"], rel=1e-6)
    assert history.epochs["val_clean_acc"] == reference_history.epochs["val_clean_acc"]
    manifest = longrun.load_state("tiny", root=tiny_run)
    assert manifest["notes"] == [] and len(manifest["pieces"]) == 2


def test_a_finished_run_records_its_errors_on_the_whole_test_set(tiny_run) -> None:
    from advcore import data
    from advcore.evaluate import evaluate

    longrun.run_piece("tiny", epochs=1, root=tiny_run, progress=False)
    assert "final" not in longrun.load_state("tiny", root=tiny_run)  # not finished: nothing to record
    longrun.run_piece("tiny", epochs=1, root=tiny_run, progress=False)
    final = longrun.load_state("tiny", root=tiny_run)["final"]
    model, test = longrun.load_weights("tiny", root=tiny_run), data.load_mnist("test")
    attack = zoo.monitor_attack(zoo.recipe("softmax", profile="smoke").monitor)
    assert final["test_examples"] == len(test) == 10_000
    assert final["clean_error"] == evaluate(model, test, progress=False).error_rate
    assert final["attack_error"] == evaluate(model, test, attack=attack, progress=False).error_rate
    assert final["attack"] == attack.describe() and 0 < final["clean_error"] < final["attack_error"]


def test_a_new_machine_resumes_from_the_committed_files_and_says_so(tiny_run, tmp_path) -> None:
    longrun.run_piece("tiny", epochs=1, root=tiny_run, progress=False)
    for checkpoint in (tmp_path / "cache").glob("*.ckpt"):
        checkpoint.unlink()  # the cache is gone; git still has the piece
    piece = longrun.run_piece("tiny", epochs=1, root=tiny_run, progress=False)
    manifest = longrun.load_state("tiny", root=tiny_run)
    assert piece["epochs"] == [2, 2] and manifest["epochs_done"] == 2
    assert any("fresh optimizer" in note for note in manifest["notes"])
    assert len(longrun.history("tiny", root=tiny_run).epochs["epoch"]) == 2


def test_damaged_or_foreign_files_are_never_used(tiny_run, monkeypatch) -> None:
    longrun.run_piece("tiny", epochs=1, root=tiny_run, progress=False)
    folder = longrun.run_dir("tiny", root=tiny_run)
    model_file = folder / longrun.load_state("tiny", root=tiny_run)["weights"]
    content = bytearray(model_file.read_bytes())
    content[len(content) // 2] ^= 0xFF
    model_file.write_bytes(bytes(content))
    with pytest.raises(longrun.LongRunError, match="damaged"):
        longrun.load_weights("tiny", root=tiny_run)
    with pytest.raises(longrun.LongRunError, match="damaged"):
        longrun.run_piece("tiny", epochs=1, root=tiny_run, progress=False)

    recipe, _ = longrun._recipe_and_key("tiny")
    monkeypatch.setattr(longrun, "_recipe_and_key", lambda name: (recipe, "0" * 64))  # the code's recipe changed
    with pytest.raises(longrun.LongRunError, match="another recipe"):
        longrun.load_state("tiny", root=tiny_run)


def test_bad_arguments_say_what_to_do(tiny_run) -> None:
    with pytest.raises(ValueError, match="whole number"):
        longrun.run_piece("tiny", epochs=1.5, root=tiny_run)  # type: ignore[arg-type]
    with pytest.raises(KeyError, match="choose one of"):
        longrun.run_piece("no_such_run", epochs=1, root=tiny_run)
    with pytest.raises(longrun.LongRunError, match="no committed piece"):
        longrun.load_weights("tiny", root=tiny_run)


def test_the_papers_evaluation_is_of_the_finished_runs_weights_and_verified(tiny_run, monkeypatch) -> None:
    from advcore import data
    from advcore.evaluate import evaluate

    spec, _ = longrun.EVALUATIONS["pgd40"]
    monkeypatch.setitem(longrun.EVALUATIONS, "pgd40", (spec, 50))  # 50 test images: a second
    with pytest.raises(longrun.LongRunError, match="not finished"):
        longrun.evaluate_run("tiny", "pgd40", root=tiny_run, progress=False)
    longrun.run_piece("tiny", epochs=2, root=tiny_run, progress=False)
    result = longrun.evaluate_run("tiny", "pgd40", root=tiny_run, progress=False)
    model, test = longrun.load_weights("tiny", root=tiny_run), data.load_mnist("test", limit=50)
    assert result["test_examples"] == 50 and result["attack"] == "PGD eps=0.3, 40 steps of 0.01"
    assert result["attack_error"] == evaluate(model, test, attack=spec.seeded(0, "cpu"), progress=False).error_rate
    assert result["clean_error"] < result["attack_error"]
    assert longrun.load_evaluations("tiny", root=tiny_run) == {"pgd40": result}
    path = longrun.run_dir("tiny", root=tiny_run) / "evaluations.json"
    committed = json.loads(path.read_text())
    for edit in (lambda r: r["results"]["pgd40"].update(attack_error=0.0),  # a better number typed in
                 lambda r: (r.pop("sha256"), r["results"]["pgd40"].update(attack_error=0.0))):  # and unsealed
        edited = json.loads(json.dumps(committed))
        edit(edited)
        path.write_text(json.dumps(edited))
        with pytest.raises(longrun.LongRunError, match="damaged"):
            longrun.load_evaluations("tiny", root=tiny_run)
        with pytest.raises(longrun.LongRunError, match="damaged"):  # before any attack runs
            longrun.evaluate_run("tiny", "pgd40", root=tiny_run, progress=False)
    with pytest.raises(KeyError, match="pgd100x20"):
        longrun.evaluate_run("tiny", "pgd20", root=tiny_run)


def test_a_long_evaluation_is_made_in_pieces_that_add_up(tiny_run, monkeypatch, capsys) -> None:
    """``extend`` evaluates the next test images (random starts seeded with the first one's index)
    and the record's rates are the pieces' counts; a piece edited by hand is found."""
    from advcore import data
    from advcore.evaluate import evaluate

    pgd, _ = longrun.EVALUATIONS["pgd40"]
    monkeypatch.setitem(longrun.EVALUATIONS, "pgd40", (pgd, 40))
    longrun.run_piece("tiny", epochs=2, root=tiny_run, progress=False)
    first = longrun.evaluate_run("tiny", "pgd40", extend=True, root=tiny_run, progress=False)  # nothing yet: images 0-39
    both = longrun.evaluate_run("tiny", "pgd40", extend=True, root=tiny_run, progress=False)
    model, (images, labels) = longrun.load_weights("tiny", root=tiny_run), data.load_mnist("test", limit=80).tensors
    second = evaluate(model, (images[40:], labels[40:]), attack=pgd.seeded(40, "cpu"), progress=False)
    assert [piece["first"] for piece in both["pieces"]] == [0, 40] and both["test_examples"] == 80
    assert both["pieces"][0] == first["pieces"][0]
    assert both["pieces"][1]["attack_errors"] == round(second.error_rate * 40)
    assert both["attack_error"] == (first["pieces"][0]["attack_errors"] + both["pieces"][1]["attack_errors"]) / 80
    assert longrun.load_evaluations("tiny", root=tiny_run)["pgd40"] == both
    again = longrun.evaluate_run("tiny", "pgd40", root=tiny_run, progress=False)  # without extend: made afresh
    assert again["test_examples"] == 40 and again["pieces"][0]["attack_errors"] == first["pieces"][0]["attack_errors"]
    assert longrun.main(["evaluate", "tiny", "--attack", "pgd40", "--extend", "--root", str(tiny_run)]) == 0
    assert re.search(r"on test images 40-79: accuracy .*; on all 80 evaluated: ", capsys.readouterr().out)

    fgsm, _ = longrun.EVALUATIONS["fgsm"]
    monkeypatch.setitem(longrun.EVALUATIONS, "fgsm", (fgsm, 6_000))
    for _ in range(2):
        longrun.evaluate_run("tiny", "fgsm", extend=True, root=tiny_run, progress=False)
    assert longrun.load_evaluations("tiny", root=tiny_run)["fgsm"]["test_examples"] == 10_000
    with pytest.raises(longrun.LongRunError, match="already covers all 10,000"):
        longrun.evaluate_run("tiny", "fgsm", extend=True, root=tiny_run, progress=False)

    path = longrun.run_dir("tiny", root=tiny_run) / "evaluations.json"
    committed = json.loads(path.read_text())
    committed["results"]["fgsm"]["pieces"][1]["attack_errors"] -= 1  # resealed: only the counts disagree
    path.write_text(json.dumps(storage.seal({key: value for key, value in committed.items() if key != "sha256"})))
    with pytest.raises(longrun.LongRunError, match="not its pieces' counts"):
        longrun.load_evaluations("tiny", root=tiny_run)


def test_an_evaluation_made_before_pieces_reads_as_one_piece() -> None:
    """The committed PGD-100 x 20 record of ``cnn_pgd_fast`` predates pieces: extending it starts
    from its counts, which its rates give exactly."""
    old = {"attack": "PGD", "test_examples": 1000, "clean_error": 0.009, "attack_error": 0.111,
           "attack_confidence": 0.96, "wall_time_s": 2214.6, "cpu_time_s": 4393.9, "threads": 2,
           "device": "cpu", "torch": "2", "git_commit": "12eecca", "created_utc": "2026-12-03T15:30:56Z"}
    (piece,) = longrun._evaluation_pieces(old)
    assert (piece["first"], piece["clean_errors"], piece["attack_errors"]) == (0, 9, 111)
    combined = longrun._combined("PGD", [piece])
    assert combined.pop("attack_confidence") == pytest.approx(old.pop("attack_confidence"), rel=1e-12)
    assert {key: combined[key] for key in old} == old


def test_landscape_pieces_are_of_one_model(tiny_run) -> None:
    settings = {"restarts": 8, "block": 4, "images": 1, "steps": 2, "traced": 2, "step_size": 0.1}
    longrun.run_piece("tiny", epochs=1, root=tiny_run, progress=False)
    longrun.landscape_piece("tiny", image=0, block=0, root=tiny_run, settings=settings, progress=False)
    first_weights = longrun.load_state("tiny", root=tiny_run)["weights"]
    longrun.run_piece("tiny", epochs=1, root=tiny_run, progress=False)  # the run trains on
    folder = longrun.run_dir("tiny", root=tiny_run)
    assert not (folder / first_weights).exists()  # replaced only once run.json names the new weights
    with pytest.raises(longrun.LongRunError, match="other weights"):
        longrun.landscape_piece("tiny", image=0, block=1, root=tiny_run, settings=settings, progress=False)


def test_landscape_pieces_in_any_order_gather_into_one_verified_result(tiny_run) -> None:
    longrun.run_piece("tiny", epochs=2, root=tiny_run, progress=False)
    settings = {"restarts": 48, "block": 20, "images": 2, "steps": 3, "traced": 4, "step_size": 0.1}
    second = longrun.landscape_piece("tiny", image=1, block=2, root=tiny_run, settings=settings, progress=False)
    assert second["restarts"] == 8  # the last block holds what is left of 48
    for block in (1, 0):
        longrun.landscape_piece("tiny", image=1, block=block, root=tiny_run, settings=settings, progress=False)
    gathered = longrun.load_landscape("tiny", root=tiny_run)["images"][1]
    assert gathered["restarts"] == 48 and gathered["traces"].shape == (4, 4)
    assert (gathered["final_losses"][:4] == gathered["traces"][:, -1]).all()

    again = longrun.landscape_piece("tiny", image=1, block=1, root=tiny_run, settings=settings, progress=False)
    assert again["sha256"] == longrun.load_landscape("tiny", root=tiny_run)["pieces"]["img1-block001.npz"]["sha256"]
    with pytest.raises(longrun.LongRunError, match="other settings"):
        longrun.landscape_piece("tiny", image=0, block=0, root=tiny_run, settings={**settings, "steps": 4})
    with pytest.raises(ValueError, match="block in"):
        longrun.landscape_piece("tiny", image=0, block=3, root=tiny_run, settings=settings)
    folder = longrun.run_dir("tiny", root=tiny_run) / "landscape"
    record = folder / "img1-block002.json"
    record.write_text(record.read_text().replace('"restarts": 8', '"restarts": 9'))  # edited by hand
    with pytest.raises(longrun.LongRunError, match="img1-block002.json is unreadable or damaged"):
        longrun.load_landscape("tiny", root=tiny_run)
    record.unlink()  # a piece whose record is gone is not read (its data is not vouched for)
    assert longrun.load_landscape("tiny", root=tiny_run)["images"][1]["restarts"] == 40
    piece = folder / "img1-block000.npz"
    piece.write_bytes(piece.read_bytes()[:-10])
    with pytest.raises(longrun.LongRunError, match="damaged"):
        longrun.load_landscape("tiny", root=tiny_run)


def test_landscape_pieces_made_in_two_checkouts_merge_without_a_shared_file(tiny_run, tmp_path) -> None:
    """Two worktrees (or machines) each make pieces of one landscape; copying one's files into the
    other (what a git merge of their commits does) overwrites nothing and gathers all pieces."""
    longrun.run_piece("tiny", epochs=1, root=tiny_run, progress=False)
    other = tmp_path / "other-checkout"
    shutil.copytree(tiny_run, other)
    settings = {"restarts": 8, "block": 4, "images": 2, "steps": 2, "traced": 2, "step_size": 0.1}
    for root, image in ((tiny_run, 0), (other, 1)):
        for block in (0, 1):
            longrun.landscape_piece("tiny", image=image, block=block, root=root, settings=settings, progress=False)
    here, there = (longrun.run_dir("tiny", root=root) / "landscape" for root in (tiny_run, other))
    assert not {path.name for path in here.iterdir()} & {path.name for path in there.iterdir()}
    for path in there.iterdir():
        shutil.copy(path, here / path.name)
    gathered = longrun.load_landscape("tiny", root=tiny_run)
    assert sorted(gathered["images"]) == [0, 1] and all(v["restarts"] == 8 for v in gathered["images"].values())


def test_two_runs_complete_landscapes_are_shown_side_by_side_for_chapter_8(tiny_run, monkeypatch) -> None:
    monkeypatch.setitem(longrun.RUNS, "tiny_robust", longrun.Run("softmax_fgsm", profile="smoke"))
    settings = {"restarts": 8, "block": 4, "images": 2, "steps": 3, "traced": 2, "step_size": 0.1}
    for run in ("tiny", "tiny_robust"):
        longrun.run_piece(run, epochs=2, root=tiny_run, progress=False)

    def piece(run: str, image: int, block: int) -> None:
        longrun.landscape_piece(run, image=image, block=block, root=tiny_run, settings=settings, progress=False)

    def result():
        return longrun.landscape_result(plain="tiny", robust="tiny_robust", root=tiny_run)

    for block in (0, 1):
        piece("tiny", 0, block)
        piece("tiny", 1, block)
    assert result() is None  # nothing of the robust model yet
    piece("tiny_robust", 1, 0)
    assert result() is None  # image 1 is half done for it
    piece("tiny_robust", 1, 1)
    piece("tiny_robust", 0, 1)  # image 0: no traced block 0 yet
    shown = result()
    assert shown["models"] == ["plain", "PGD-trained"] and shown["examples"] == [1]
    assert {"examples", "labels", "settings", "final_losses", "traces"} <= set(shown.keys())  # what chapter 8 reads
    assert {"steps", "step_size", "eps"} <= set(shown["settings"])
    assert shown["final_losses"].shape == (2, 1, 8) and shown["traces"].shape == (2, 1, 2, 4)
    plain, robust = (longrun.load_landscape(run, root=tiny_run)["images"][1] for run in ("tiny", "tiny_robust"))
    assert (shown["final_losses"][1, 0] == robust["final_losses"]).all()
    assert (shown["traces"][0, 0] == plain["traces"]).all() and shown["labels"] == [plain["label"]]
    assert shown.describe().startswith("8 restarts x 3 PGD steps of 0.1 per image, attack in float32")
    assert "h wall time) in 4 pieces" in shown.describe()
    assert re.search(r"at commits? [0-9a-f]{7}(, [0-9a-f]{7}){0,2}$|at commit unknown$", shown.describe())

    # a landscape of weights that are no longer the run's committed ones is not shown
    longrun.run_dir("tiny_robust", root=tiny_run).joinpath("run.json").unlink()
    longrun.run_piece("tiny_robust", epochs=1, root=tiny_run, progress=False)
    with pytest.warns(UserWarning, match="other weights"):
        assert result() is None


def test_two_finished_runs_are_shown_in_chapter_9s_layout_with_their_evaluations(tiny_run, monkeypatch) -> None:
    from advcore import experiments

    monkeypatch.setitem(longrun.RUNS, "tiny_robust", longrun.Run("softmax_fgsm", profile="smoke"))
    spec, _ = longrun.EVALUATIONS["pgd40"]
    monkeypatch.setitem(longrun.EVALUATIONS, "pgd40", (spec, 50))  # 50 test images: a second

    def shown():
        return experiments.robust_training_runs(plain="tiny", robust="tiny_robust", root=tiny_run)

    longrun.run_piece("tiny", epochs=2, root=tiny_run, progress=False)
    longrun.run_piece("tiny_robust", epochs=1, root=tiny_run, progress=False)
    assert shown() is None  # the robust run is not finished
    longrun.run_piece("tiny_robust", epochs=1, root=tiny_run, progress=False)
    for run in ("tiny", "tiny_robust"):
        longrun.evaluate_run(run, "pgd40", root=tiny_run, progress=False)
    result = shown()
    mnist = result["mnist"]
    assert mnist["models"] == ["plain", "PGD-trained"] and not result["cifar10"]["available"]
    accuracy = {(row["model"], row["attack"]): row["accuracy"] for row in mnist["accuracy"]}
    robust_state = longrun.load_state("tiny_robust", root=tiny_run)
    assert accuracy[("PGD-trained", "natural")] == 1 - robust_state["final"]["clean_error"]
    evaluated = longrun.load_evaluations("tiny_robust", root=tiny_run)["pgd40"]
    assert accuracy[("PGD-trained", "PGD-40 (step 0.01), 50 images")] == 1 - evaluated["attack_error"]
    assert len(accuracy) == 4  # natural and PGD-40 per model; no FGSM or PGD-100 evaluation committed
    history = longrun.history("tiny_robust", root=tiny_run)
    assert mnist["epochs"]["PGD-trained"]["val_adv_acc"] == history.epochs["val_adv_acc"]
    steps, loss = result["mnist_robust_steps"], result["mnist_robust_loss"]
    assert len(steps) == len(loss) and loss.mean() == pytest.approx(np.mean(history.steps["loss"]), rel=1e-3)
    assert "results/runs/tiny_robust" in result.describe() and "h wall time) in 3 pieces" in result.describe()
    assert "no piece resumed with a fresh optimizer" in result.describe()
    # what chapter 9 says of how the runs were made
    assert mnist["runs"] == ["tiny", "tiny_robust"]
    assert {k: mnist["recipes"]["PGD-trained"][k] for k in ("pieces", "precision", "fresh_optimizer_resumes")} == {
        "pieces": 2, "precision": "float32", "fresh_optimizer_resumes": 0}
    assert mnist["recipes"]["PGD-trained"]["weight_updates"] == len(history.steps["loss"]) > 0
    assert mnist["recipes"]["PGD-trained"]["evaluated_on"] == {"natural": robust_state["final"]["test_examples"],
                                                               "PGD-40 (step 0.01)": 50}
    from advcore import wording  # chapter 9's sentence, from these records

    recipe = mnist["recipes"]["PGD-trained"]
    text = wording.long_run_differences(fast_start=0.0, **{key: recipe[key] for key in (
        "epochs", "training_images", "weight_updates", "pieces", "trained_on", "precision",
        "fresh_optimizer_resumes", "evaluated_on")})
    assert "in 2 pieces" in text and "except PGD-40 (step 0.01) on 50." in text

    # one model's evaluation extended by a piece: one column, which says how many images each had
    longrun.evaluate_run("tiny_robust", "pgd40", extend=True, root=tiny_run, progress=False)
    rows = {(row["model"], row["attack"]) for row in shown()["mnist"]["accuracy"]}
    assert {("plain", "PGD-40 (step 0.01), 50 (plain) and 100 (PGD-trained) images"),
            ("PGD-trained", "PGD-40 (step 0.01), 50 (plain) and 100 (PGD-trained) images")} <= rows


def test_the_command_line_prints_a_summary_per_piece_and_the_status(tiny_run, capsys) -> None:
    assert longrun.main(["status", "tiny", "--root", str(tiny_run)]) == 0
    assert "no piece committed yet" in capsys.readouterr().out
    assert longrun.main(["piece", "tiny", "--epochs", "1", "--root", str(tiny_run)]) == 0
    summary = capsys.readouterr().out
    assert "piece 0 done, epochs 1-1" in summary and "validation accuracy clean" in summary
    longrun.main(["status", "tiny", "--root", str(tiny_run)])
    assert "1 of 2 epochs in 1 piece(s)" in capsys.readouterr().out
    # --pieces: one piece after another until the run is finished
    assert longrun.main(["piece", "tiny", "--epochs", "1", "--pieces", "5", "--root", str(tiny_run)]) == 0
    summary = capsys.readouterr().out
    assert "piece 1 done, epochs 2-2" in summary and "already finished; nothing to do" in summary
    assert longrun._blocks("0-2") == [0, 1, 2] and longrun._blocks("4") == [4]
    for bad in ("9-0", "a-b"):
        with pytest.raises(SystemExit):
            longrun.main(["landscape", "tiny", "--image", "0", "--block", bad, "--root", str(tiny_run)])
    assert "a block is a number or a range" in capsys.readouterr().err


def test_a_code_change_that_changes_trains_checkpoint_key_does_not_strand_a_run(tiny_run, tmp_path) -> None:
    """train() keys checkpoints by details (e.g. the model's printed structure) that may change
    with the code between pieces; the run's own recipe key is what longrun checks."""
    from advcore import train

    longrun.run_piece("tiny", epochs=1, root=tiny_run, progress=False)
    (checkpoint,) = (tmp_path / "cache").glob("*.ckpt")
    train.save_checkpoint(checkpoint, {**train.load_checkpoint(checkpoint), "config_key": "f" * 64})
    piece = longrun.run_piece("tiny", epochs=1, root=tiny_run, progress=False)
    assert piece["epochs"] == [2, 2] and longrun.load_state("tiny", root=tiny_run)["notes"] == []


def test_an_edited_manifest_is_detected(tiny_run) -> None:
    longrun.run_piece("tiny", epochs=1, root=tiny_run, progress=False)
    path = longrun.run_dir("tiny", root=tiny_run) / "run.json"
    manifest = json.loads(path.read_text())
    manifest["epochs_done"] = 2  # claims more training than was committed
    path.write_text(json.dumps(manifest))
    with pytest.raises(longrun.LongRunError, match="checksum"):
        longrun.load_state("tiny", root=tiny_run)


def test_committed_weights_replaced_by_other_valid_weights_are_detected(tiny_run) -> None:
    """Issue 15's fault kinds for the committed weights: truncated, and another valid file."""
    longrun.run_piece("tiny", epochs=1, root=tiny_run, progress=False)
    path = longrun.run_dir("tiny", root=tiny_run) / longrun.load_state("tiny", root=tiny_run)["weights"]
    original = path.read_bytes()
    other = zoo.initial_model(zoo.recipe("softmax", profile="smoke"))
    torch.save({k: v.half() for k, v in other.state_dict().items()}, path)  # loads fine, wrong weights
    with pytest.raises(longrun.LongRunError, match="damaged"):
        longrun.load_weights("tiny", root=tiny_run)
    path.write_bytes(original[: len(original) // 2])
    with pytest.raises(longrun.LongRunError, match="damaged"):
        longrun.load_weights("tiny", root=tiny_run)
    path.write_bytes(original)
    longrun.load_weights("tiny", root=tiny_run)  # restored: used again


def test_without_a_checkout_a_finished_run_is_downloaded_verified_and_kept_consistent(tiny_run, monkeypatch, tmp_path):
    """Colab: no checkout, the committed files come from the repository (here: a folder standing in for it)."""
    import shutil

    repository = tiny_run  # the committed results/ of the tiny run
    longrun.run_piece("tiny", epochs=1, root=repository, progress=False)
    online = {"yes": True}
    fetched: list[str] = []

    def fetch(relative, *, target=None):
        source = repository / relative
        if not online["yes"] or not source.is_file():
            return None
        target = target if target is not None else tmp_path / "cache" / "results" / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        fetched.append(relative)
        return target

    monkeypatch.setenv("ADVCORE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(longrun, "downloads_committed", lambda: True)
    monkeypatch.setattr(longrun, "fetch_committed", fetch)
    monkeypatch.setattr(longrun, "_FETCHED", set())
    assert longrun.load_state("tiny") is None  # unfinished: nothing is copied, no warning
    assert fetched == ["runs/tiny/run.json"] and not (longrun.run_dir("tiny") / "run.json").exists()

    longrun.run_piece("tiny", epochs=1, root=repository, progress=False)  # now finished
    monkeypatch.setattr(longrun, "_FETCHED", set())
    state = longrun.load_state("tiny")
    assert state["epochs_done"] == state["epochs_total"] and longrun.run_dir("tiny").is_relative_to(tmp_path / "cache")
    reference = longrun.load_weights("tiny", root=repository)
    assert all(torch.equal(a, b) for a, b in zip(reference.state_dict().values(),
                                                  longrun.load_weights("tiny").state_dict().values()))

    weights = longrun.run_dir("tiny") / state["weights"]
    weights.write_bytes(b"damaged")  # a cached file that went bad is downloaded again
    monkeypatch.setattr(longrun, "_FETCHED", set())
    fetched.clear()
    assert longrun.load_state("tiny")["key"] == state["key"] and f"runs/tiny/{state['weights']}" in fetched

    online["yes"] = False  # offline: the consistent cached copy is used
    monkeypatch.setattr(longrun, "_FETCHED", set())
    assert longrun.load_state("tiny")["epochs_done"] == state["epochs_done"]


@pytest.fixture()
def large_run(tiny_run, monkeypatch):
    """``tiny_large``: the smoke profile's 1600-unit FGSM-trained maxout (early stopping), a run that does not
    commit its weights, paired with the finished ``tiny`` run; its end-of-run test uses 300 test images."""
    from advcore import data

    monkeypatch.setitem(longrun.RUNS, "tiny_large", longrun.Run(
        "maxout1600_fgsm_es", profile="smoke", commits_weights=False, transfer_partners=("tiny",)))
    full = data.load_mnist
    monkeypatch.setattr(longrun.data, "load_mnist", lambda split="train", limit=None: full(
        split, limit=300 if split == "test" else limit))
    return tiny_run


def test_a_run_too_large_to_commit_is_trained_whole_and_commits_what_it_measured(large_run) -> None:
    with pytest.raises(longrun.LongRunError, match="not finished: train 'tiny' first"):
        longrun.run_piece("tiny_large", epochs=2, root=large_run, progress=False)
    longrun.run_piece("tiny", epochs=2, root=large_run, progress=False)
    with pytest.raises(ValueError, match="--epochs 2"):  # no piece can resume it from git
        longrun.run_piece("tiny_large", epochs=1, root=large_run, progress=False)

    longrun.run_piece("tiny_large", epochs=2, root=large_run, progress=False)
    state = longrun.load_state("tiny_large", root=large_run)
    final = state["final"]
    assert "weights" not in state and not any(name.endswith(".pt") for name in state["files"])
    assert final["best_epoch"] in (1, 2) and longrun.history("tiny_large", root=large_run).best_epoch == final["best_epoch"]
    assert final["transfer_partners"] == {"tiny": longrun._committed_weights_sha("tiny", root=large_run)}
    with pytest.raises(longrun.LongRunError, match="does not commit its weights"):
        longrun.load_weights("tiny_large", root=large_run)

    measured = longrun.measurements("tiny_large", root=large_run)
    assert measured.clean.n == measured.attacked.n == measured.transfer.n == 300
    assert measured.clean.error_rate == final["clean_error"] and measured.attacked.error_rate == final["attack_error"]
    assert list(measured.transfer.error.index) == ["tiny", "tiny_large"]
    # FGSM is deterministic: the diagonal of the transfer matrix is the white-box error measured beside it.
    assert measured.transfer.error.loc["tiny_large", "tiny_large"] == pytest.approx(measured.attacked.error_rate)
    assert measured.transfer.clean_error["tiny_large"] == pytest.approx(measured.clean.error_rate)
    renamed = measured.transfer.renamed({"tiny_large": "large"})
    assert list(renamed.error.columns) == ["tiny", "large"] and renamed.n == 300


def test_measurements_paired_with_other_weights_are_refused(large_run) -> None:
    import shutil

    longrun.run_piece("tiny", epochs=2, root=large_run, progress=False)
    longrun.run_piece("tiny_large", epochs=2, root=large_run, progress=False)
    shutil.rmtree(longrun.run_dir("tiny", root=large_run))  # the partner moved away (to be retrained)
    with pytest.raises(longrun.LongRunError, match="other weights of 'tiny'"):
        longrun.measurements("tiny_large", root=large_run)


def test_the_command_line_commits_only_the_finished_piece(tiny_run, monkeypatch, capsys) -> None:
    repo = tiny_run.parent
    for variable in ("GIT_AUTHOR_NAME", "GIT_COMMITTER_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_EMAIL"):
        monkeypatch.setenv(variable, "t@example.org")
    git = ["git", "-C", str(repo)]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "notes.txt").write_text("work in progress")  # someone's uncommitted file: left alone
    subprocess.run([*git, "add", "notes.txt"], check=True)
    monkeypatch.chdir(repo)
    assert longrun.main(["piece", "tiny", "--epochs", "1", "--root", str(tiny_run), "--commit"]) == 0
    assert "piece 0 done, epochs 1-1" in capsys.readouterr().out
    log = subprocess.run([*git, "log", "--format=%s", "--name-only"], capture_output=True, text=True, check=True).stdout
    assert log.splitlines()[0] == "results/runs/tiny: piece 0 (epochs 1-1, 0 min)"
    committed = [line for line in log.splitlines()[1:] if line]
    assert committed and all(line.startswith("results/runs/tiny/") for line in committed)
    assert "run.json" in {line.rsplit("/", 1)[-1] for line in committed}
    staged = subprocess.run([*git, "diff", "--cached", "--name-only"], capture_output=True, text=True, check=True).stdout
    assert staged.split() == ["notes.txt"]  # still staged, not swept into the run's commit
