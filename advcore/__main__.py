"""``python -m advcore``: run the book's experiments at a chosen profile and save the results.

Paper-scale runs need a GPU; the book is built without one. Run an experiment where
there is a GPU, then commit the small files it writes under ``results/``; the chapters
show them beside their live, profile-sized results::

    python -m advcore list                                  # the experiments and their chapters
    python -m advcore run landscape --profile gpu           # chapter 8 at paper scale
    python -m advcore run robust-training --profile gpu     # chapter 9 at paper scale
    python -m advcore run all --profile gpu                 # every experiment
    python -m advcore show landscape --profile gpu          # what a saved result holds

Runs resume: trained models come from ``advcore.zoo`` (trained once per profile and
checkpointed in the cache) and finished pieces of an experiment are cached too, so an
interrupted run picks up where it stopped when started again with the same command.
"""

from __future__ import annotations

import argparse
import difflib
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from advcore.profiles import PROFILE_NAMES, current_profile, default_device


def _experiments():
    from advcore import experiments  # imported lazily: `list` and `--help` stay instant

    return experiments


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m advcore",
        description="Run the course companion's experiments and save their results with provenance.",
        epilog="Example: python -m advcore run landscape --profile gpu",
    )
    commands = parser.add_subparsers(dest="command", metavar="{list,run,show}")
    commands.required = True

    commands.add_parser("list", help="list the experiments")

    run = commands.add_parser("run", help="run an experiment and save its result",
                              description="Run an experiment and save its result under --root.")
    run.add_argument("experiment", help="an experiment name from `python -m advcore list`, or `all`")
    run.add_argument("--profile", choices=PROFILE_NAMES, default=None,
                     help="experiment sizes (default: $ADVCORE_PROFILE, else gpu with CUDA, else cpu)")
    run.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    run.add_argument("--root", default=None,
                     help="results folder (default: $ADVCORE_RESULTS, else the checkout's results/)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")

    show = commands.add_parser("show", help="describe a saved result")
    show.add_argument("experiment")
    show.add_argument("--profile", choices=PROFILE_NAMES, default=None,
                      help="which profile's result (default: as `run`: $ADVCORE_PROFILE, else gpu with CUDA, "
                           "else cpu)")
    show.add_argument("--root", default=None)
    return parser


def _resolve(name: str, registry: dict, *, allow_all: bool) -> list[str]:
    """The experiment names ``name`` stands for; a clear error for unknown names."""
    if allow_all and name == "all":
        return list(registry)
    if name in registry:
        return [name]
    known = sorted(registry) + (["all"] if allow_all else [])
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise SystemExit(
        f"python -m advcore: unknown experiment {name!r}.{hint} Choose one of: {', '.join(known)} "
        "(see `python -m advcore list`)."
    )


def _list() -> int:
    registry = _experiments().EXPERIMENTS
    width = max(len(name) for name in registry)
    print("Experiments (python -m advcore run NAME --profile smoke|cpu|gpu):")
    for name, experiment in registry.items():
        print(f"  {name:<{width}}  chapter {experiment.chapter:>2}  {experiment.summary}")
    print(f"  {'all':<{width}}             every experiment above, in this order")
    return 0


def _run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    import torch

    from advcore.results import result_path, save_result

    experiments = _experiments()
    names = _resolve(args.experiment, experiments.EXPERIMENTS, allow_all=True)
    profile = current_profile(args.profile)
    device = torch.device(args.device) if args.device else default_device()
    if profile.name == "gpu" and device.type != "cuda":
        print("python -m advcore: note: the gpu profile on a CPU will take many hours; "
              "use --profile cpu for a quick run.", file=sys.stderr)
    for name in names:  # before hours of work: can the results be written at all?
        _check_writable(result_path(name, profile=profile.name, root=args.root).parent)
    for name in names:
        experiment = experiments.EXPERIMENTS[name]
        print(f"[{name}] profile {profile.name} on {device} ...", flush=True)
        started = time.perf_counter()
        with experiments.cache_ledger() as ledger:
            data = experiment.run(profile, device=device, progress=not args.no_progress)
        this_run_s = time.perf_counter() - started
        # A resumed run took only its last part: the result cost that plus its cached pieces' time.
        wall_time_s = this_run_s + ledger["from_cache_seconds"]
        resumed = {"pieces_computed": ledger["computed"], "pieces_from_cache": ledger["from_cache"],
                   "from_cache_seconds": round(ledger["from_cache_seconds"], 2),
                   "this_run_seconds": round(this_run_s, 2)}
        path = save_result(name, data, profile=profile.name, wall_time_s=wall_time_s, root=args.root,
                           device=device, command=" ".join(["python -m advcore", *map(shlex.quote, argv)]),
                           resumed=resumed if ledger["from_cache"] else None)
        note = f" ({ledger['from_cache']} pieces from an earlier run)" if ledger["from_cache"] else ""
        print(f"[{name}] done in {this_run_s / 60:.1f} min{note} -> {path}", flush=True)
    return 0


def _check_writable(folder: Path) -> None:
    """Exit with a clear message unless a file can be created in ``folder`` (made if missing)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise SystemExit(
            f"python -m advcore: cannot write results to {folder} ({error.strerror or error}). "
            "Pass a writable folder with --root (or set ADVCORE_RESULTS); nothing was run."
        ) from None


def _show(args: argparse.Namespace) -> int:
    from advcore.results import load_result, result_path

    _resolve(args.experiment, _experiments().EXPERIMENTS, allow_all=False)
    profile = current_profile(args.profile).name  # the same default as `run`
    result = load_result(args.experiment, profile=profile, root=args.root)
    if result is None:
        path = result_path(args.experiment, profile=profile, root=args.root)
        state = "is damaged (see the warning above)" if path.exists() else "does not exist yet"
        print(f"The {profile!r} result for {args.experiment!r} ({path}) {state}; make one with "
              f"`python -m advcore run {args.experiment} --profile {profile}`.")
        return 1
    print(f"{result.path}: {result.describe()}")
    for key in sorted(result.data):
        value = result.data[key]
        text = repr(value)
        print(f"  {key}: {text if len(text) <= 100 else text[:97] + '...'}")
    for key, array in sorted(result.arrays.items()):
        print(f"  {key}: array {array.dtype} {tuple(array.shape)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.command == "list":
        return _list()
    if args.command == "run":
        return _run(args, argv)
    return _show(args)


if __name__ == "__main__":
    sys.exit(main())
