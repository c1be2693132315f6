"""advcore.zoo: names, recipes, train-once caching, and a cache that is never trusted blindly."""

from __future__ import annotations

import dataclasses
import json
import math
import warnings

import pytest
import torch

from advcore import data, storage, zoo
from advcore import train as training
from advcore.profiles import PROFILES, current_profile

CHAPTER_NAMES = {
    "softmax", "softmax_fgsm", "maxout", "maxout_fgsm", "maxout1600_fgsm_es", "maxout_noise",
    "maxout_rotation", "maxout_scaledgrad", "sigmoid_mlp", "sigmoid_mlp_hidden", "relu_mlp",
    "relu_mlp_hidden", "cnn", "cnn_pgd", "maxout_seed1", "cnn_seed1", "cnn_pgd_seed1", "surrogate_mlp",
    "resnet_cifar", "resnet_cifar_pgd",
}
MNIST_NAMES = [name for name in sorted(CHAPTER_NAMES) if not name.startswith("resnet")]


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    """A private cache and a profile small enough to train an entry in a second or two."""
    monkeypatch.setenv("ADVCORE_CACHE", str(tmp_path))
    return current_profile("smoke").replace(mnist_train=300, mnist_val=100, epochs_linear=2, epochs_cnn=1,
                                            epochs_surrogate=2, pgd_train_steps=1, pgd_train_step_size=0.3)


class CountingTrain:
    """Wraps advcore.train.train to count (and optionally inspect) the training runs."""

    def __init__(self, monkeypatch) -> None:
        self.calls: list[tuple] = []
        self.real = training.train
        monkeypatch.setattr(training, "train", self)

    def __call__(self, model, train_set, **options):
        self.calls.append((model, train_set, options))
        return self.real(model, train_set, **options)


# --------------------------------------------------------------------------- names and recipes


def test_names_cover_every_chapter() -> None:
    assert CHAPTER_NAMES <= set(zoo.names())
    with pytest.raises(KeyError, match="maxout_fgsm"):
        zoo.recipe("maxout_fsgm")


def test_a_recipe_trains_with_a_train_config_of_its_own_settings() -> None:
    """zoo.training_options, the one place a recipe becomes a training call, carries every setting over."""
    prof = current_profile("smoke")
    for name in zoo.names():
        rec = zoo.recipe(name, profile=prof)
        if rec.data != "mnist":  # CIFAR-10 is not mirrored; a surrogate would train its victim first
            continue
        train_set, options = zoo.training_options(rec, prof)
        config = options["config"]
        assert isinstance(config, training.TrainConfig) and set(options) == {"config", "val_set", "device"}
        for field in ("epochs", "batch_size", "optimizer", "lr", "weight_decay", "early_stopping", "patience", "seed"):
            assert getattr(config, field) == getattr(rec, field), (name, field)
        assert config.lr_milestones == tuple(rec.lr_milestones)
        assert config.objective.config() == training.make_objective(rec.objective, **rec.objective_options).config()
        assert config.monitor.to_dict() == rec.monitor, name
        assert len(train_set) == prof.mnist_train and len(options["val_set"]) == prof.mnist_val


@pytest.mark.parametrize("profile", ["smoke", "cpu", "gpu"])
def test_describe_is_one_line_per_entry(profile: str) -> None:
    for name in zoo.names():
        line = zoo.describe(name, profile=profile)
        assert "\n" not in line and line.startswith(f"{name}: ") and f"[{profile} profile]" in line
        assert "epochs" in line and ("MNIST" in line or "CIFAR-10" in line)
    assert "2x1600 units" in zoo.describe("maxout1600_fgsm_es", profile=profile)
    assert "eps=0.25, alpha=0.5" in zoo.describe("maxout_fgsm", profile=profile)
    assert "early stopping" in zoo.describe("maxout1600_fgsm_es", profile=profile)


def test_gpu_recipes_follow_the_papers() -> None:
    gpu = PROFILES["gpu"]
    maxout = zoo.profile_recipe("maxout_fgsm", profile=gpu)
    # pylearn2's mnist_pi.yaml (Goodfellow et al. 2013): include probabilities .8 / .5, max_col_norm 1.9365
    assert maxout.architecture_options | {} == {"hidden": 240, "pieces": 5, "layers": 2,
                                                 "input_dropout": 0.2, "dropout": 0.5, "max_norm": 1.9365}
    assert maxout.objective_options == {"eps": 0.25, "alpha": 0.5} and maxout.batch_size == 100
    assert maxout.optimizer == "sgd" and "SGD with momentum 0.9" in maxout.note
    assert zoo.build_model(maxout).max_norm == 1.9365
    # the short profiles keep Adam (their recipes, and so their cache keys, are unchanged)
    assert "max_norm" not in zoo.profile_recipe("maxout_fgsm", profile="cpu").architecture_options
    assert zoo.profile_recipe("maxout_noise_sign", profile=gpu).objective_options["distribution"] == "sign"
    large = zoo.profile_recipe("maxout1600_fgsm_es", profile=gpu)
    assert large.architecture_options["hidden"] == 1600 and large.early_stopping
    cnn = zoo.profile_recipe("cnn_pgd", profile=gpu)
    assert cnn.objective_options == {"eps": 0.3, "step_size": 0.01, "steps": 40, "random_start": True, "warmup": 0.0}
    assert (cnn.optimizer, cnn.lr, cnn.batch_size) == ("adam", 1e-4, 50)
    steps = cnn.epochs * math.ceil(gpu.mnist_train / cnn.batch_size)
    assert 99_000 <= steps <= 101_000  # Madry et al.: 100k iterations
    resnet = zoo.profile_recipe("resnet_cifar_pgd", profile=gpu)
    assert resnet.objective_options["eps"] == pytest.approx(8 / 255)
    assert (resnet.objective_options["steps"], resnet.objective_options["step_size"]) == (7, pytest.approx(2 / 255))
    assert resnet.architecture_options["width"] == 64


@pytest.mark.parametrize("profile", ["smoke", "cpu"])
def test_fewer_pgd_steps_get_a_scaled_step_size(profile: str) -> None:
    options = zoo.profile_recipe("cnn_pgd", profile=profile).objective_options
    assert options["step_size"] == pytest.approx(2.5 * 0.3 / options["steps"], rel=0.01)


# --------------------------------------------------------------------------- caching


def test_get_trains_once_then_loads_from_the_cache(tiny, monkeypatch, tmp_path) -> None:
    counting = CountingTrain(monkeypatch)
    model = zoo.get("softmax", profile=tiny, device="cpu")
    assert not model.training and len(counting.calls) == 1
    folder = data.cache_dir() / "zoo" / "smoke" / "softmax"
    assert folder == zoo.entry_dir("softmax", profile=tiny) and folder.is_relative_to(tmp_path)
    assert {"manifest.json", "model.pt", "history.json", "recipe.json"} <= {p.name for p in folder.iterdir()}
    assert not list(folder.glob("*.ckpt"))  # the training checkpoint is gone once the entry is saved

    again = zoo.get("softmax", profile=tiny, device="cpu")
    assert len(counting.calls) == 1  # loaded, not retrained
    for p, q in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(p, q)

    history = zoo.history("softmax", profile=tiny)
    assert len(history) == tiny.epochs_linear and len(counting.calls) == 1
    assert history.config["zoo"]["recipe"]["name"] == "softmax"
    assert {"val_adv_acc", "val_clean_acc"} <= set(history.epochs_frame().columns)
    assert zoo.manifest("softmax", profile=tiny)["key"] == zoo.cache_key("softmax", profile=tiny)


@pytest.mark.parametrize("damage", ["truncate_model", "flip_history", "garbage_manifest", "delete_model"])
def test_a_damaged_entry_is_retrained_never_loaded(tiny, monkeypatch, damage: str) -> None:
    zoo.get("softmax", profile=tiny)
    folder = zoo.entry_dir("softmax", profile=tiny)
    zoo._VERIFIED.clear()  # a new process: nothing verified yet
    if damage == "truncate_model":
        content = (folder / "model.pt").read_bytes()
        (folder / "model.pt").write_bytes(content[: len(content) // 2])
    elif damage == "flip_history":
        content = bytearray((folder / "history.json").read_bytes())
        content[10] ^= 0x01
        (folder / "history.json").write_bytes(bytes(content))
    elif damage == "garbage_manifest":
        (folder / "manifest.json").write_text("{not json")
    else:
        (folder / "model.pt").unlink()

    counting = CountingTrain(monkeypatch)
    with pytest.warns(UserWarning, match="damaged"):
        model = zoo.get("softmax", profile=tiny)
    assert len(counting.calls) == 1
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the retrained entry is clean
        zoo._VERIFIED.clear()
        zoo.get("softmax", profile=tiny)
    assert len(counting.calls) == 1


def test_a_changed_recipe_retrains(tiny, monkeypatch) -> None:
    zoo.get("softmax", profile=tiny)
    counting = CountingTrain(monkeypatch)
    longer = tiny.replace(epochs_linear=3)
    assert zoo.cache_key("softmax", profile=longer) != zoo.cache_key("softmax", profile=tiny)
    zoo.get("softmax", profile=longer)
    assert len(counting.calls) == 1 and len(zoo.history("softmax", profile=longer)) == 3


def test_an_interrupted_zoo_training_resumes_to_the_same_model(tiny, monkeypatch, tmp_path) -> None:
    profile = tiny.replace(epochs_linear=3)
    reference = zoo.get("softmax", profile=profile)

    monkeypatch.setenv("ADVCORE_CACHE", str(tmp_path / "second"))
    real_evaluate, calls = training._evaluate, []

    def interrupt_in_epoch_two(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # epoch 1 is done and checkpointed; stop during epoch 2's evaluation
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(training, "_evaluate", interrupt_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        zoo.get("softmax", profile=profile)
    folder = zoo.entry_dir("softmax", profile=profile)
    assert not (folder / "manifest.json").exists() and len(list(folder.glob("training-*.ckpt"))) == 1

    monkeypatch.setattr(training, "_evaluate", real_evaluate)
    resumed = zoo.get("softmax", profile=profile)
    for p, q in zip(reference.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(p, q)


def test_paper_scale_training_says_how_to_resume_or_shrink_it(tiny, monkeypatch, capsys) -> None:
    zoo.get("softmax", profile=tiny)
    assert "paper-scale" not in capsys.readouterr().out  # small profiles train without a notice

    paper_scale = tiny.replace(name="gpu")  # tiny sizes, but filed and announced as the gpu profile
    real_evaluate, calls = training._evaluate, []

    def interrupt_in_epoch_two(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(training, "_evaluate", interrupt_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        zoo.get("softmax", profile=paper_scale)
    first = capsys.readouterr().out
    folder = zoo.entry_dir("softmax", profile=paper_scale)
    assert "paper-scale" in first and "checkpointed every epoch" in first and str(folder) in first
    assert "ADVCORE_PROFILE=cpu" in first and "ADVCORE_CACHE" in first

    monkeypatch.setattr(training, "_evaluate", real_evaluate)
    zoo.get("softmax", profile=paper_scale)
    assert "continuing from the checkpoint of an interrupted run" in capsys.readouterr().out


def test_cifar_entries_say_when_cifar10_is_missing(tiny, monkeypatch) -> None:
    monkeypatch.setattr(data, "cifar10_available", lambda: False)
    for name in ("resnet_cifar", "resnet_cifar_pgd"):
        with pytest.raises(data.DataUnavailableError, match="CIFAR-10"):
            zoo.get(name, profile=tiny)
        assert "CIFAR-10" in zoo.describe(name, profile=tiny)


def test_surrogate_learns_the_victims_labels_on_held_out_images(tiny, monkeypatch) -> None:
    counting = CountingTrain(monkeypatch)
    surrogate = zoo.get("surrogate_mlp", profile=tiny, device="cpu")
    assert not surrogate.training
    (_, cnn_data, _), (_, surrogate_data, _) = counting.calls  # the victim is trained first
    victim = zoo.get("cnn", profile=tiny, device="cpu")
    _, val, _ = data.mnist_splits(tiny)
    x, labels = surrogate_data.tensors
    assert torch.equal(x, val.tensors[0])  # the validation tail: never in the victim's training set
    with torch.no_grad():
        assert torch.equal(labels, victim(x).argmax(1))  # labelled by querying the victim
    assert not any(torch.equal(x[:1], row[None]) for row in cnn_data.tensors[0][:300])


@pytest.mark.parametrize("profile", ["smoke", "cpu", "gpu"])
def test_independent_robust_copy_differs_only_in_seed(profile: str) -> None:
    """Madry et al.'s Table 1 source A': the same training, independently initialized."""
    original, copy = (zoo.profile_recipe(name, profile=profile).to_dict() for name in ("cnn_pgd", "cnn_pgd_seed1"))
    assert (copy.pop("name"), copy.pop("seed")) == ("cnn_pgd_seed1", 1)
    assert (original.pop("name"), original.pop("seed")) == ("cnn_pgd", 0)
    assert copy == original


# --------------------------------------------------------------------------- the smoke profile


@pytest.mark.slow
def test_every_mnist_entry_trains_in_the_smoke_profile() -> None:
    """Uses the session cache, so the notebooks run later in the session reuse these models."""
    smoke = PROFILES["smoke"]
    for name in MNIST_NAMES:
        model = zoo.get(name, profile=smoke, device="cpu")
        history = zoo.history(name, profile=smoke)
        recipe = zoo.profile_recipe(name, profile=smoke)
        assert not model.training
        assert 1 <= len(history) <= recipe.epochs
        assert all(math.isfinite(v) for v in history.steps["loss"]), name
        if recipe.early_stopping:
            assert history.best_epoch is not None
        json.dumps(zoo.manifest(name, profile=smoke))


# --------------------------------------------------------------------------- committed paper-scale runs


@pytest.fixture
def committed_softmax(monkeypatch, tmp_path, tiny):
    """A finished two-epoch long run of the smoke softmax recipe, committed under a temporary results/."""
    from advcore import longrun

    monkeypatch.setenv("ADVCORE_RESULTS", str(tmp_path / "results"))
    monkeypatch.setitem(longrun.RUNS, "softmax", longrun.Run("softmax", profile="smoke"))
    longrun.run_piece("softmax", epochs=2, progress=False)
    return current_profile("smoke").replace(mnist_train=300, mnist_val=100, epochs_linear=1, committed_runs=True)


def test_profiles_that_use_committed_runs_load_them_instead_of_training(committed_softmax, monkeypatch) -> None:
    from advcore import longrun

    counting = CountingTrain(monkeypatch)
    model = zoo.get("softmax", profile=committed_softmax, device="cpu")
    committed = longrun.load_weights("softmax")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), committed.state_dict().values()))
    assert counting.calls == []  # nothing trained
    # recipe, history, description and key all describe the committed model, not the profile's own recipe
    assert zoo.recipe("softmax", profile=committed_softmax).epochs == 2
    assert zoo.profile_recipe("softmax", profile=committed_softmax).epochs == 1
    assert zoo.history("softmax", profile=committed_softmax).epochs["epoch"] == [1, 2]
    assert "results/runs/softmax" in zoo.describe("softmax", profile=committed_softmax)
    # the key of results computed with the model names the committed weights, not the profile's recipe
    state = longrun.load_state("softmax")
    key = zoo.model_key("softmax", profile=committed_softmax)
    own = committed_softmax.replace(committed_runs=False)
    assert key != zoo.model_key("softmax", profile=own) == zoo.cache_key("softmax", profile=own)
    assert key == storage.json_digest({"run": state["key"], "weights": state["files"][state["weights"]]})
    # the smoke profile keeps training its own tiny model
    assert zoo.committed_run("softmax", profile=own) is None
    # a committed model and a profile-trained one are not trained alike; two profile-trained ones are
    assert not zoo.trained_alike("softmax", "softmax_fgsm", profile=committed_softmax)
    assert zoo.trained_alike("softmax", "softmax_fgsm", profile=own)
    assert "the paper-scale run committed in `results/runs/softmax`" in zoo.training_text("softmax", profile=committed_softmax)
    assert zoo.training_text("softmax", profile=own).startswith("300 MNIST training images for 1 epoch with Adam")
    # the weight updates each model was trained with: the committed run's history records every one
    assert zoo.training_steps("softmax", profile=committed_softmax) == len(longrun.history("softmax").steps["loss"])
    rec = zoo.profile_recipe("softmax", profile=own)
    assert zoo.training_steps("softmax", profile=own) == rec.epochs * -(-300 // rec.batch_size)


def test_trained_less_than_madry_counts_the_weight_updates() -> None:
    """Madry et al.'s MNIST schedule (the gpu profile: 91 epochs of 1,100 batches of 50) is not
    shorter than their 100,000 steps; the smoke profile's short run is."""
    assert zoo.training_steps("cnn_pgd", profile="gpu") == 91 * 1_100
    assert not zoo.trained_less_than_madry("cnn_pgd", profile="gpu")
    assert zoo.trained_less_than_madry("cnn_pgd", profile="smoke")


def test_a_damaged_committed_run_is_not_used(committed_softmax, monkeypatch) -> None:
    from advcore import longrun

    state = longrun.load_state("softmax")
    weights = longrun.run_dir("softmax") / state["weights"]
    weights.write_bytes(weights.read_bytes()[:-10])
    counting = CountingTrain(monkeypatch)
    with pytest.warns(UserWarning, match="Not using the committed run of 'softmax'.*damaged"):
        zoo.get("softmax", profile=committed_softmax, device="cpu")
    assert len(counting.calls) == 1  # trained the profile's own recipe instead


def test_a_surrogates_key_follows_the_victim_model_it_imitates(monkeypatch) -> None:
    """The surrogate is trained on its victim's labels: a committed victim means another surrogate."""
    from advcore import longrun

    before = zoo.cache_key("surrogate_mlp", profile="cpu")
    assert before == zoo.cache_key("surrogate_mlp", profile="cpu")  # stable
    monkeypatch.setattr(zoo, "committed_run", lambda name, profile=None: longrun.RUNS["cnn"] if name == "cnn" else None)
    real_state = longrun.load_state
    committed = {"key": "0" * 64, "weights": "model-a.pt", "files": {"model-a.pt": "a" * 64},
                 "pieces": [{"wall_time_s": 1.0, "device": "cpu"}]}  # a finished committed victim
    monkeypatch.setattr(longrun, "load_state",
                        lambda name, **kw: committed if name == "cnn" else real_state(name, **kw))
    with_victim = zoo.cache_key("surrogate_mlp", profile="cpu")
    assert with_victim != before
    committed["files"] = {"model-a.pt": "b" * 64}  # the victim retrained: other weights, another surrogate
    assert zoo.cache_key("surrogate_mlp", profile="cpu") not in (before, with_victim)


def test_a_recipe_note_is_not_part_of_the_cache_key(monkeypatch) -> None:
    """Rewording a recipe's note (e.g. a citation fix) must not retrain the model."""
    before = zoo.cache_key("maxout", profile="smoke")
    real = zoo.profile_recipe
    monkeypatch.setattr(zoo, "profile_recipe", lambda name, profile=None: dataclasses.replace(
        real(name, profile=profile), note="reworded"))
    assert zoo.cache_key("maxout", profile="smoke") == before
    monkeypatch.setattr(zoo, "profile_recipe", lambda name, profile=None: dataclasses.replace(
        real(name, profile=profile), lr=0.5))
    assert zoo.cache_key("maxout", profile="smoke") != before


def test_a_committed_run_too_large_to_commit_gives_its_measurements_not_a_model(monkeypatch) -> None:
    from advcore import longrun

    assert zoo.committed_measurements("maxout1600_fgsm_es", profile="smoke") is None  # smoke trains its own
    assert zoo.committed_measurements("maxout", profile="smoke") is None
    monkeypatch.setattr(zoo, "committed_run", lambda name, profile=None: longrun.RUNS["maxout1600_fgsm_es"])
    with pytest.raises(longrun.LongRunError, match=r"zoo.committed_measurements\('maxout1600_fgsm_es'\)"):
        zoo.get("maxout1600_fgsm_es", profile="cpu")
    assert zoo.recipe("maxout1600_fgsm_es", profile="cpu") == longrun.recipe("maxout1600_fgsm_es")
    assert zoo.recipe("maxout1600_fgsm_es", profile="cpu").epochs == longrun.RUNS["maxout1600_fgsm_es"].epochs


def test_a_finished_run_of_another_recipe_can_stand_in_for_an_entry(committed_softmax, monkeypatch) -> None:
    from advcore import longrun

    monkeypatch.delitem(longrun.RUNS, "softmax")
    monkeypatch.setitem(longrun.RUNS, "softmax_fgsm", longrun.Run("softmax_fgsm", profile="smoke", zoo_entry="softmax"))
    assert zoo.committed_run("softmax", profile=committed_softmax) is None  # not finished yet: the entry trains
    longrun.run_piece("softmax_fgsm", epochs=2, progress=False)
    stand_in = longrun.load_weights("softmax_fgsm")
    for name in ("softmax", "softmax_fgsm"):  # the entry it stands in for, and its own
        model = zoo.get(name, profile=committed_softmax, device="cpu")
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), stand_in.state_dict().values()))
        assert zoo.recipe(name, profile=committed_softmax) == longrun.recipe("softmax_fgsm")
        assert "results/runs/softmax_fgsm" in zoo.describe(name, profile=committed_softmax)
        # not the entry's own paper-scale recipe, and the prose says so
        assert "the long CPU run committed in `results/runs/softmax_fgsm`, which stands in for the paper's recipe" in (
            zoo.training_text(name, profile=committed_softmax))
        assert zoo.history(name, profile=committed_softmax).epochs["epoch"] == [1, 2]
    assert zoo.committed_run("softmax", profile=committed_softmax.replace(committed_runs=False)) is None
    # a stand-in can be limited to some profiles (cnn_pgd_fast: the cpu profile; gpu trains the paper's recipe)
    monkeypatch.setitem(longrun.RUNS, "softmax_fgsm", longrun.Run("softmax_fgsm", profile="smoke", zoo_entry="softmax",
                                                                   profiles_replaced=("cpu",)))
    assert zoo.committed_run("softmax", profile=committed_softmax) is None
    assert zoo.committed_run("softmax", profile=committed_softmax.replace(name="cpu")) == longrun.RUNS["softmax_fgsm"]
