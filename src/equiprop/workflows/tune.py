"""``equiprop tune``: Optuna search over a recipe's declared space; every trial is a real Lightning fit.

    equiprop tune -c recipes/tune_max_ell_irreps.yaml --n-trials 20 [--storage URL --study-name NAME]
                  [--trainer.max_epochs=3 --data.batch_size=16 ...]    (applied to every trial)

The recipe is a fit recipe plus a ``tune:`` section (metric, directions, pruner, seed, heartbeat_interval,
grace_period, search_space); a bad entry is a one-line error naming the option and what it accepts, before any
trial trains. Storage defaults to SQLite next to the run (``runs/<run_name>/optuna.db``, one machine);
``--storage journal:///shared/study.log`` (a journal file on a shared file system) or a PostgreSQL URL lets workers on
many machines share one study: run the same command on each (``tune_storage``). Each worker runs trials until the
study holds ``--n-trials`` finished ones; re-running the same command resumes the study.

Sampler seed: each run seeds its sampler from ``tune.seed``, the number of trials already in the study when the run
starts, and the worker's process id (``numpy.random.SeedSequence``), and prints it. So a resumed study does not replay
the parameters of its first trials and workers sharing a study draw different ones; a search is reproducible from
the printed seeds, not from ``tune.seed`` alone.

Killed workers: every running trial records a heartbeat each ``tune.heartbeat_interval`` seconds (default 60); a trial
silent for ``tune.grace_period`` seconds (default 180, must exceed the interval) is marked failed by the next worker
to look, and retried (up to twice) by a live worker, which waits for it while the trials left are running
elsewhere. A shorter grace period frees a killed worker's trial sooner; it must
stay well above the interval, or a busy but live worker's trial is failed too.

Outputs in ``runs/<run_name>/``: trials.csv, best_recipe.yaml, optimisation history and parameter-importance
(or Pareto-front) PNGs.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import lightning as L
import numpy as np
import yaml

from equiprop.data.errors import ConfigError
from equiprop.train.run import build_run, load_recipe, set_dotted
from equiprop.train.run_dir import check_run_name, run_path
from equiprop.workflows.options import ArgumentParser, non_negative_int
from equiprop.workflows.tune_storage import label, open_storage, run_worker

SECONDS_PER_EPOCH = "seconds_per_epoch"
DEFAULT_METRIC = "val/loss"
DEFAULT_PRUNER = {"class": "MedianPruner", "n_startup_trials": 2, "n_warmup_steps": 1}
DIRECTIONS = ("minimize", "maximize")
HEARTBEAT_INTERVAL, GRACE_PERIOD = 60, 180  # seconds
# search-space type -> the keys its entry needs
SPACE_KEYS = {"categorical": ("choices",), "int": ("low", "high"), "float": ("low", "high"),
              "int_list": ("low", "high", "length")}


class EpochTimer(L.Callback):
    """Mean wall time of a training epoch (the cost objective of the multi-objective search)."""

    def __init__(self):
        self.durations: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module):
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        self.durations.append(time.perf_counter() - self._start)

    @property
    def mean(self) -> float:
        return sum(self.durations) / max(len(self.durations), 1)


def suggest(trial, name: str, spec: dict):
    """One value for ``name`` from a search-space entry: categorical, int, float (log), or int_list (one int per l).
    Categorical choices may be lists or mappings (descriptor sets, priors): Optuna stores them as JSON strings."""
    kind = spec.get("type")
    if kind == "categorical":
        if any(isinstance(c, (list, dict)) for c in spec["choices"]):
            return json.loads(trial.suggest_categorical(name, [json.dumps(c, sort_keys=True) for c in spec["choices"]]))
        return trial.suggest_categorical(name, spec["choices"])
    if kind == "int":
        return trial.suggest_int(name, spec["low"], spec["high"], step=spec.get("step", 1), log=spec.get("log", False))
    if kind == "float":
        return trial.suggest_float(name, spec["low"], spec["high"], log=spec.get("log", False))
    if kind == "int_list":  # e.g. multiplicities per l of the hidden irreps
        return [trial.suggest_int(f"{name}[{i}]", spec["low"], spec["high"], log=spec.get("log", False))
                for i in range(spec["length"])]
    raise ConfigError(f"tune.search_space.{name}.type: one of {', '.join(SPACE_KEYS)}, got {kind!r}")


def chosen_value(params: dict, name: str, spec: dict):
    """The recipe value a finished trial chose for ``name``, as ``suggest`` gave it to the trial (a list or mapping
    choice decoded from the JSON string Optuna stores; an int_list gathered from its per-l entries)."""
    if spec.get("type") == "int_list":
        return [params[f"{name}[{i}]"] for i in range(spec["length"])]
    if spec.get("type") == "categorical" and any(isinstance(c, (list, dict)) for c in spec["choices"]):
        return json.loads(params[name])
    return params[name]


def check_search_space(space) -> None:
    """Every entry a mapping with a known type and the keys that type needs (checked before any trial trains)."""
    if not isinstance(space, dict) or not space:
        raise ConfigError("tune.search_space: a mapping of dotted recipe keys to {type: ..., ...} entries")
    for name, spec in space.items():
        kind = spec.get("type") if isinstance(spec, dict) else None
        if kind not in SPACE_KEYS:
            raise ConfigError(f"tune.search_space.{name}.type: one of {', '.join(SPACE_KEYS)}, got {kind!r}")
        missing = [key for key in SPACE_KEYS[kind] if key not in spec]
        if missing:
            raise ConfigError(f"tune.search_space.{name}: type {kind} needs {', '.join(SPACE_KEYS[kind])}; "
                              f"missing {', '.join(missing)}")


def check_metric(metric) -> None:
    """The metric must be a validation metric: the pruner and the objective read it after each validation."""
    if not isinstance(metric, str) or not metric.startswith("val/"):
        raise ConfigError(f"tune.metric: a validation metric: val/loss, val/weighted_loss or val/<task>/<metric> "
                          f"(e.g. val/Ef/mae), got {metric!r}")


def study_directions(tune: dict) -> list[str]:
    directions = tune.get("directions", ["minimize"])
    if not isinstance(directions, list) or len(directions) != 1 or directions[0] not in DIRECTIONS:
        raise ConfigError(f"tune.directions: a list of one direction, {' or '.join(DIRECTIONS)} "
                          f"(multi_objective: true adds seconds per epoch), got {directions!r}")
    if tune.get("multi_objective"):
        return [directions[0], "minimize"]  # (validation error, seconds per epoch)
    return directions


def make_pruner(tune: dict):
    import optuna

    spec = dict(tune.get("pruner", DEFAULT_PRUNER))
    name = spec.pop("class", None)
    classes = {n: getattr(optuna.pruners, n) for n in dir(optuna.pruners) if n != "BasePruner"}
    allowed = sorted(n for n, c in classes.items() if isinstance(c, type) and issubclass(c, optuna.pruners.BasePruner))
    if name not in allowed:
        raise ConfigError(f"tune.pruner.class: one of {', '.join(allowed)}, got {name!r}")
    try:
        return getattr(optuna.pruners, name)(**spec)
    except (TypeError, ValueError) as err:  # unknown or bad keyword arguments
        raise ConfigError(f"tune.pruner: {name}({spec}) rejected: {err}") from None


def heartbeat_settings(tune: dict) -> tuple[int, int]:
    """(heartbeat_interval, grace_period) in seconds, checked: grace_period > heartbeat_interval > 0."""
    interval = tune.get("heartbeat_interval", HEARTBEAT_INTERVAL)
    grace = tune.get("grace_period", GRACE_PERIOD)
    for name, value in (("heartbeat_interval", interval), ("grace_period", grace)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:  # Optuna takes whole seconds
            raise ConfigError(f"tune.{name}: a positive whole number of seconds, got {value!r}")
    if grace <= interval:  # a live worker's trial would be failed between two of its heartbeats
        raise ConfigError(f"tune.grace_period: must exceed tune.heartbeat_interval ({interval} s), got {grace} s")
    return interval, grace


def base_seed(tune: dict) -> int:
    seed = tune.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"tune.seed: a non-negative integer, got {seed!r}")
    return seed


def check_tune(tune: dict) -> None:
    """Reject a bad tune: section before any trial trains (each check names the option and what it accepts)."""
    check_metric(tune.get("metric", DEFAULT_METRIC))
    check_search_space(tune.get("search_space"))
    study_directions(tune)
    make_pruner(tune)
    heartbeat_settings(tune)
    base_seed(tune)


def sampler_seed(seed: int, n_existing: int) -> int:
    """This run's sampler seed: a resumed study or a second worker must not replay the parameters already drawn."""
    return int(np.random.SeedSequence([seed, n_existing, os.getpid()]).generate_state(1)[0])


def make_storage(tune: dict, url: str):
    """The storage ``url`` names (RDB URL or ``journal://PATH``) with the recipe's heartbeat: a killed worker's trial
    is failed and retried (twice)."""
    interval, grace = heartbeat_settings(tune)
    return open_storage(url, interval, grace)


def make_study(tune: dict, storage, study_name: str):
    """The study (created or resumed), its sampler seeded for this run from tune.seed, its size now and the pid."""
    import optuna

    directions, pruner = study_directions(tune), make_pruner(tune)
    study = optuna.create_study(storage=storage, study_name=study_name, load_if_exists=True, directions=directions,
                                pruner=pruner)
    base, n_existing = base_seed(tune), len(study.get_trials(deepcopy=False))
    seed = sampler_seed(base, n_existing)
    sampler = optuna.samplers.NSGAIISampler(seed=seed) if len(directions) > 1 else optuna.samplers.TPESampler(seed=seed)
    print(f"sampler seed {seed} (tune.seed {base}, {n_existing} trials already in the study, process {os.getpid()})")
    return optuna.load_study(study_name=study_name, storage=storage, sampler=sampler, pruner=pruner)


def trial_score(trainer, metric: str) -> float:
    """The trial's value: the best epoch's when the checkpoint monitors the metric, else the last epoch's."""
    checkpoint = trainer.checkpoint_callback
    if checkpoint is not None and checkpoint.monitor == metric and checkpoint.best_model_score is not None:
        return float(checkpoint.best_model_score)
    if metric not in trainer.callback_metrics:
        logged = sorted(k for k in trainer.callback_metrics if k.startswith("val/"))
        raise ConfigError(f"tune.metric: {metric!r} was never logged; logged: {', '.join(logged) or 'none'}")
    return float(trainer.callback_metrics[metric])


def objective_for(recipe: dict, tune: dict, overrides: list[str], run_dir: Path):
    from optuna_integration import PyTorchLightningPruningCallback

    metric, multi = tune.get("metric", DEFAULT_METRIC), bool(tune.get("multi_objective"))

    def objective(trial):
        trial_recipe = dict(recipe)
        for name, spec in tune["search_space"].items():
            trial_recipe = set_dotted(trial_recipe, name, suggest(trial, name, spec))
        trial_recipe["run_name"] = f"{recipe.get('run_name', 'tune')}/trial_{trial.number:03d}"
        trainer, model, datamodule = build_run(trial_recipe, overrides, run_dir / f"trial_{trial.number:03d}")
        timer = EpochTimer()
        trainer.callbacks.append(timer)
        if not multi:  # Optuna prunes single-objective studies only
            trainer.callbacks.append(PyTorchLightningPruningCallback(trial, monitor=metric))
        trainer.fit(model, datamodule=datamodule)  # the pruning callback raises TrialPruned through here
        score = trial_score(trainer, metric)
        trial.set_user_attr(SECONDS_PER_EPOCH, timer.mean)
        trial.set_user_attr("best_checkpoint", getattr(trainer.checkpoint_callback, "best_model_path", ""))
        return (score, timer.mean) if multi else score

    return objective


def write_outputs(study, recipe: dict, tune: dict, run_dir: Path) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.trial import TrialState

    frame = study.trials_dataframe()
    frame.to_csv(run_dir / "trials.csv", index=False)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    outputs = {"trials": str(run_dir / "trials.csv")}
    if not done:
        return outputs
    multi = len(study.directions) > 1
    best = min(study.best_trials, key=lambda t: t.values[0]) if multi else study.best_trial
    best_recipe = {k: v for k, v in recipe.items() if k != "tune"}
    for name, spec in tune["search_space"].items():
        best_recipe = set_dotted(best_recipe, name, chosen_value(best.params, name, spec))
    best_recipe["run_name"] = f"{recipe.get('run_name', 'tune')}_best"
    metric = tune.get("metric", DEFAULT_METRIC)
    header = (f"# Best configuration of study {study.study_name!r} (trial {best.number}, {metric}"
              f" = {best.values[0]:.6g}); run with: equiprop fit -c THIS_FILE\n")
    (run_dir / "best_recipe.yaml").write_text(header + yaml.safe_dump(best_recipe, sort_keys=False))
    outputs["best_recipe"] = str(run_dir / "best_recipe.yaml")
    plots = {"history": lambda: optuna.visualization.matplotlib.plot_optimization_history(
        study, target=(lambda t: t.values[0]) if multi else None, target_name=metric)}
    if multi:
        plots["pareto_front"] = lambda: optuna.visualization.matplotlib.plot_pareto_front(
            study, target_names=[metric, SECONDS_PER_EPOCH])
    elif len(done) >= 2 and len(done[0].params) >= 2:
        plots["importances"] = lambda: optuna.visualization.matplotlib.plot_param_importances(study)
    for name, plot in plots.items():
        try:
            plot()
        except (ValueError, RuntimeError) as err:  # e.g. importances need variation among finished trials
            print(f"equiprop tune: no {name} plot ({err})")
            continue
        plt.gcf().set_size_inches(8, 5)
        plt.savefig(run_dir / f"{name}.png", dpi=100, bbox_inches="tight")
        plt.close("all")
        outputs[name] = str(run_dir / f"{name}.png")
    return outputs


def tune_command(argv: list[str]) -> int:
    parser = ArgumentParser(prog="equiprop tune", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", required=True, help="recipe with a tune: section")
    parser.add_argument("--n-trials", type=non_negative_int, required=True,
                        help="finished trials the study should hold")
    parser.add_argument("--storage", help="sqlite:///FILE, postgresql+psycopg://USER@HOST/DB or journal://PATH "
                                          "(default: SQLite next to the run)")
    parser.add_argument("--study-name", help="default: the recipe's run_name")
    args, overrides = parser.parse_known_args(argv)
    bad = [o for o in overrides if not o.startswith(("--trainer.", "--model.", "--data.", "--seed_everything"))]
    if bad:
        parser.error(f"unknown arguments {bad} (overrides must be --trainer.*, --model.* or --data.*)")
    recipe = load_recipe(args.config)
    tune = recipe.pop("tune", None)
    if not isinstance(tune, dict) or not tune.get("search_space"):
        raise ConfigError(f"{args.config}: no tune.search_space section")
    check_tune(tune)
    run_name = check_run_name(recipe.get("run_name", Path(args.config).stem))  # trials nest in its folder
    run_dir = run_path(run_name)
    storage = make_storage(tune, args.storage) if args.storage else None  # a bad --storage stops before any folder
    run_dir.mkdir(parents=True, exist_ok=True)
    url = args.storage or f"sqlite:///{(run_dir / 'optuna.db').resolve()}"
    study = make_study(tune, storage or make_storage(tune, url), args.study_name or run_name)
    from optuna.trial import TrialState

    finished = len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED)))
    remaining = max(args.n_trials - finished, 0)
    print(f"study {study.study_name!r} in {label(url)}: {finished} finished trials, running {remaining} more")
    if remaining:
        run_worker(study, objective_for(recipe, tune, overrides, run_dir), args.n_trials, budget=remaining,
                   poll=min(heartbeat_settings(tune)[0], 10))
    outputs = write_outputs(study, recipe, tune, run_dir)
    print("\n" + summary(study))
    for name, path in outputs.items():
        print(f"{name}: {path}")
    return 0


def summary(study) -> str:
    from optuna.trial import TrialState

    lines = [f"{'trial':>5} {'state':<9} {'value(s)':<28} params"]
    for t in study.trials:
        values = ", ".join(f"{v:.4g}" for v in t.values) if t.values else ""
        lines.append(f"{t.number:>5} {t.state.name:<9} {values:<28} {t.params}")
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    if complete and len(study.directions) > 1:
        lines.append(f"Pareto front: trials {[t.number for t in study.best_trials]}")
    elif complete:
        lines.append(f"best: trial {study.best_trial.number} value {study.best_value:.6g}")
    return "\n".join(lines)
