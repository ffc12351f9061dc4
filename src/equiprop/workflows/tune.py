"""``equiprop tune``: Optuna search over a recipe's declared space; every trial is a real Lightning fit.

    equiprop tune -c recipes/tune_max_ell_irreps.yaml --n-trials 20 [--storage URL --study-name NAME]
                  [--trainer.max_epochs=3 --data.batch_size=16 ...]    (applied to every trial)

The recipe is a fit recipe plus a ``tune:`` section (metric, directions, pruner, search_space). Storage defaults to
SQLite next to the run (``checkpoints/<run_name>/optuna.db``); any Optuna RDB URL lets several workers share one
study. Re-running the same command resumes the study (up to ``--n-trials`` finished trials); trials of a killed worker
are marked failed by the heartbeat and retried. Outputs in ``checkpoints/<run_name>/``: trials.csv, best_recipe.yaml,
optimisation history and parameter-importance (or Pareto-front) PNGs.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import lightning as L
import yaml

from equiprop.data.errors import ConfigError
from equiprop.workflows.recipe import build_run, load_recipe, set_dotted

SECONDS_PER_EPOCH = "seconds_per_epoch"


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
    """One value for ``name`` from a search-space entry: categorical, int, float (log), or int_list (one int per l)."""
    kind = spec.get("type")
    if kind == "categorical":
        return trial.suggest_categorical(name, spec["choices"])
    if kind == "int":
        return trial.suggest_int(name, spec["low"], spec["high"], step=spec.get("step", 1), log=spec.get("log", False))
    if kind == "float":
        return trial.suggest_float(name, spec["low"], spec["high"], log=spec.get("log", False))
    if kind == "int_list":  # e.g. multiplicities per l of the hidden irreps
        return [trial.suggest_int(f"{name}[{i}]", spec["low"], spec["high"], log=spec.get("log", False))
                for i in range(spec["length"])]
    raise ConfigError(f"search space {name}: type must be categorical, int, float or int_list, got {kind!r}")


def make_study(tune: dict, storage: str, study_name: str):
    import optuna
    from optuna.storages import RDBStorage, RetryFailedTrialCallback

    directions = tune.get("directions", ["minimize"])
    if tune.get("multi_objective"):
        directions = [directions[0], "minimize"]  # (validation error, seconds per epoch)
    pruner_spec = dict(tune.get("pruner", {"class": "MedianPruner", "n_startup_trials": 2, "n_warmup_steps": 1}))
    pruner = getattr(optuna.pruners, pruner_spec.pop("class"))(**pruner_spec)
    sampler_seed = tune.get("seed", 0)
    sampler = optuna.samplers.NSGAIISampler(seed=sampler_seed) if len(directions) > 1 else \
        optuna.samplers.TPESampler(seed=sampler_seed)
    rdb = RDBStorage(storage, heartbeat_interval=60, grace_period=180,
                     failed_trial_callback=RetryFailedTrialCallback(max_retry=2))
    return optuna.create_study(storage=rdb, study_name=study_name, load_if_exists=True, directions=directions,
                               sampler=sampler, pruner=pruner)


def objective_for(recipe: dict, tune: dict, overrides: list[str], run_dir: Path):
    from optuna_integration import PyTorchLightningPruningCallback

    metric, multi = tune.get("metric", "val/loss"), bool(tune.get("multi_objective"))

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
        checkpoint = trainer.checkpoint_callback
        score = checkpoint.best_model_score if checkpoint is not None and checkpoint.best_model_score is not None \
            else trainer.callback_metrics.get(metric)
        if score is None:
            raise RuntimeError(f"trial {trial.number}: metric {metric!r} was never logged")
        trial.set_user_attr(SECONDS_PER_EPOCH, timer.mean)
        trial.set_user_attr("best_checkpoint", getattr(checkpoint, "best_model_path", ""))
        return (float(score), timer.mean) if multi else float(score)

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
        value = ([best.params[f"{name}[{i}]"] for i in range(spec["length"])] if spec.get("type") == "int_list"
                 else best.params[name])
        best_recipe = set_dotted(best_recipe, name, value)
    best_recipe["run_name"] = f"{recipe.get('run_name', 'tune')}_best"
    header = (f"# Best configuration of study {study.study_name!r} (trial {best.number}, {tune.get('metric', 'val/loss')}"
              f" = {best.values[0]:.6g}); run with: equiprop fit -c THIS_FILE\n")
    (run_dir / "best_recipe.yaml").write_text(header + yaml.safe_dump(best_recipe, sort_keys=False))
    outputs["best_recipe"] = str(run_dir / "best_recipe.yaml")
    plots = {"history": lambda: optuna.visualization.matplotlib.plot_optimization_history(
        study, target=(lambda t: t.values[0]) if multi else None, target_name=tune.get("metric", "val/loss"))}
    if multi:
        plots["pareto_front"] = lambda: optuna.visualization.matplotlib.plot_pareto_front(
            study, target_names=[tune.get("metric", "val/loss"), SECONDS_PER_EPOCH])
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
    parser = argparse.ArgumentParser(prog="equiprop tune", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", required=True, help="recipe with a tune: section")
    parser.add_argument("--n-trials", type=int, required=True, help="finished trials the study should hold")
    parser.add_argument("--storage", help="Optuna RDB URL (default: SQLite next to the run)")
    parser.add_argument("--study-name", help="default: the recipe's run_name")
    args, overrides = parser.parse_known_args(argv)
    bad = [o for o in overrides if not o.startswith(("--trainer.", "--model.", "--data.", "--seed_everything"))]
    if bad:
        parser.error(f"unknown arguments {bad} (overrides must be --trainer.*, --model.* or --data.*)")
    recipe = load_recipe(args.config)
    tune = recipe.pop("tune", None)
    if not tune or not tune.get("search_space"):
        raise ConfigError(f"{args.config}: no tune.search_space section")
    run_name = recipe.get("run_name", Path(args.config).stem)
    run_dir = Path("checkpoints") / run_name
    run_dir.mkdir(parents=True, exist_ok=True)
    storage = args.storage or f"sqlite:///{(run_dir / 'optuna.db').resolve()}"
    study = make_study(tune, storage, args.study_name or run_name)
    from optuna.trial import TrialState

    finished = len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED)))
    remaining = max(args.n_trials - finished, 0)
    print(f"study {study.study_name!r} in {storage}: {finished} finished trials, running {remaining} more")
    if remaining:
        study.optimize(objective_for(recipe, tune, overrides, run_dir), n_trials=remaining,
                       catch=(RuntimeError,), gc_after_trial=True)
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
