"""LightningCLI for ``equiprop fit|validate|test -c recipes/X.yaml``: class_path configs, any value overridable.

One value, one place: ``data.cutoff`` feeds the encoder's cutoff and ``data.tasks`` the model's tasks (linked).
Runs write to ``runs/<run_name>/`` (``$EQUIPROP_RUNS/<run_name>/``: ``train.run_dir.runs_root``): best.ckpt and last.ckpt, TensorBoard logs and the resolved config.
A fit refuses a folder that holds an earlier run unless it resumes it (``--ckpt_path``) or replaces it
(``--overwrite=true``), and two fits never share one (``equiprop.train.run_dir``). Checkpoints are written
atomically in the run folder (``equiprop.train.checkpoint_io``).
"""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

from equiprop.data.datamodule import MultiTaskDataModule
from equiprop.data.errors import ConfigError
from equiprop.train.callbacks import MetricsTable
from equiprop.train.checkpoint_io import use_atomic_checkpoints
from equiprop.shipped import refuse_shipped
from equiprop.train.run_dir import claim_run_dir, is_rank_zero, release_all, run_folder, runs_root
from equiprop.train.run_record import config_digest
from equiprop.train.module import MultiTaskModel


class EquipropCLI(LightningCLI):
    nested_run_names = False  # --run_name is one folder name; build_run's subclass allows a workflow's sub-folders

    def init_parser(self, **kwargs):
        kwargs.setdefault("exit_on_error", False)  # run_lightning_cli turns a bad option into one line
        return super().init_parser(**kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--run_name", type=str, default="run", help="folder under runs/ ($EQUIPROP_RUNS) for this run")
        parser.add_argument("--overwrite", type=bool, default=False,
                            help="fit: delete the checkpoints an earlier run left in the run folder (default: refuse)")
        parser.link_arguments("data.cutoff", "model.encoder.init_args.cutoff")
        parser.link_arguments("data.tasks", "model.tasks", compute_fn=_task_list)
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.monitor": "val/loss", "checkpoint.filename": "best",
                             "checkpoint.save_last": True, "checkpoint.mode": "min",
                             # best.ckpt / last.ckpt are always this run's own, never best-v1.ckpt beside a stale one
                             "checkpoint.enable_version_counter": False})

    def _parse_ckpt_path(self) -> None:
        """Lightning reads ``--ckpt_path``'s hyperparameters here, first: the file is checked before (one line for a
        file that is not a checkpoint of plain types; torch's traceback would advise loading it unsafely)."""
        if self.config.get("subcommand"):
            path = self.config[self.config.subcommand].get("ckpt_path")
            if path:
                check_resume_checkpoint(path)
        super()._parse_ckpt_path()

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        self.config_digest = config_digest(config)  # before the run's folders are filled in: what it computes
        run_dir = run_folder(runs_root(), config.run_name, nested=self.nested_run_names)
        self.own_dir = run_dir
        check_trainer_numbers(config.trainer)
        if config.checkpoint.dirpath is None:
            config.checkpoint.dirpath = str(run_dir)
        if config.trainer.default_root_dir is None:
            config.trainer.default_root_dir = str(run_dir)
        if config.trainer.logger is None or config.trainer.logger is True:
            config.trainer.logger = {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                                     "init_args": {"save_dir": str(run_dir), "name": "tensorboard"}}
        for option, folder in written_folders(config):  # a shipped model's folder is never written into
            refuse_shipped(folder, option)

    def instantiate_classes(self) -> None:
        try:  # bad options fail here first, before any folder is touched
            super().instantiate_classes()
        except ConfigError:
            raise
        except ValueError as err:  # jsonargparse wraps an init's error in a report on the union's branches
            if "Union subtypes" not in str(err):
                raise
            raise ConfigError(one_line(str(err))) from None
        config = self.config[self.subcommand] if self.subcommand else self.config
        # every fit claims its folder, `equiprop fit` and the workflows' (build_run: a tune trial, a MatBench fold, a
        # curve point), whose own earlier checkpoints in it are replaced (any other file refuses the run)
        workflow = self.subcommand is None and self.nested_run_names
        if (self.subcommand == "fit" or workflow) and is_rank_zero():
            claim_run_dir(Path(config.checkpoint.dirpath), resume=config.get("ckpt_path") is not None,
                          overwrite=bool(config.overwrite) or workflow, own_dir=self.own_dir,
                          config=self.config_digest, reentrant=workflow)

    def instantiate_trainer(self, **kwargs):
        trainer = super().instantiate_trainer(**kwargs)
        use_atomic_checkpoints(trainer)
        return trainer


def written_folders(config) -> list[tuple[str, str]]:
    """(option, folder) of every folder a run writes in: checkpoints, the trainer's root, the logger's save_dir."""
    folders = [("checkpoint.dirpath", config.checkpoint.dirpath), ("trainer.default_root_dir",
                                                                     config.trainer.default_root_dir)]
    loggers = config.trainer.logger if isinstance(config.trainer.logger, list) else [config.trainer.logger]
    for logger in loggers:
        init_args = logger.get("init_args") if hasattr(logger, "get") else None
        if init_args is not None and init_args.get("save_dir"):
            folders.append(("trainer.logger.save_dir", init_args.get("save_dir")))
    return [(option, str(folder)) for option, folder in folders if folder]


def check_trainer_numbers(trainer) -> None:
    """One line for trainer counts Lightning would refuse with a traceback (e.g. ``--trainer.max_epochs=-5``)."""
    import math

    for key, lowest in (("max_epochs", -1), ("min_epochs", 0), ("max_steps", -1), ("min_steps", 0),
                        ("log_every_n_steps", 1), ("check_val_every_n_epoch", 1), ("accumulate_grad_batches", 1)):
        value = trainer.get(key)
        if value is not None and value < lowest:
            raise ConfigError(f"trainer.{key} must be >= {lowest}" + (" (-1: no limit)" if lowest == -1 else "")
                              + f", got {value}")
    for key in ("gradient_clip_val", "val_check_interval", "limit_train_batches", "limit_val_batches",
                "limit_test_batches", "overfit_batches"):
        value = trainer.get(key)
        if isinstance(value, float) and (not math.isfinite(value) or value < 0):
            raise ConfigError(f"trainer.{key} must be a finite number >= 0, got {value}")


def check_resume_checkpoint(path) -> None:
    """``--ckpt_path``: a readable checkpoint of plain types (one-line error otherwise; nothing is unpickled)."""
    from equiprop.train.integrity import read_checkpoint

    if str(path) in ("last", "best", "hpc", "registry"):  # Lightning's own names for a checkpoint it tracks
        return
    checkpoint = read_checkpoint(path)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict) \
            or "pytorch-lightning_version" not in checkpoint:
        raise ConfigError(f"--ckpt_path {path}: not a training checkpoint to resume (no Lightning training state, "
                          "e.g. a weights-only member of a shipped model); start from its weights with "
                          "--model.init_from instead")


class WorkflowCLI(EquipropCLI):
    """``build_run``'s CLI: workflows nest runs in their study's folder (``<name>/trial_000``, ``<name>/<task>/fold_0``)."""

    nested_run_names = True


def _task_list(tasks):
    from equiprop.data.datamodule import DEFAULT_TASKS

    return list(tasks) if tasks is not None else list(DEFAULT_TASKS)


def cli_kwargs() -> dict:
    """Arguments shared by every LightningCLI equiprop builds (fit/validate/test, tune trials, MatBench folds)."""
    return dict(model_class=MultiTaskModel, datamodule_class=MultiTaskDataModule,
                save_config_kwargs={"overwrite": True}, trainer_defaults={"callbacks": [MetricsTable()]},
                auto_configure_optimizers=False)


def run_lightning_cli(args: list[str]) -> None:
    from jsonargparse import ArgumentError

    try:
        quietly(lambda: EquipropCLI(args=args, **cli_kwargs()))
    except ArgumentError as err:
        raise ConfigError(one_line(str(err))) from None
    finally:
        release_all()  # the run folder is free again once this fit has returned or failed


def lightning_command_main(argv: list[str]) -> int:
    """``equiprop fit|validate|test ...`` (``equiprop.cli.COMMANDS``): 0 when it ran; errors raise ConfigError."""
    run_lightning_cli(argv)
    return 0


def one_line(message: str) -> str:
    """jsonargparse's nested report ('Parser key "data.sources": ... Parser key "dataset": <reason>') as one line,
    'data.sources: dataset: <reason>': the innermost reason that is not another union branch's mismatch (such as
    "Expected a <class 'NoneType'>"), e.g. the ConfigError an init raised or the allowed values of a Literal."""
    import re

    noise = ("Expected a <class 'NoneType'>", "Expected a path but", "Does not validate against any",
             "Problem with given class_path", "Subtypes:", "Errors:", "Given value", "Not a valid subclass")
    lines = [line.strip().removeprefix("- ").strip() for line in message.splitlines()]
    keys = [m.group(1) for line in lines if (m := re.match(r'(?:Parser key|Key) "([^"]+)":?$', line))]
    reasons = [line for line in lines if line and not line.startswith(noise)
               and not re.match(r'(?:Parser key|Key) "[^"]+":?$', line)]
    reason = reasons[-1] if reasons else message.strip().splitlines()[-1]
    return ": ".join(dict.fromkeys(keys + [reason]))


def quietly(build):
    """Build a LightningCLI from explicit args without its warning that sys.argv is also set (ours is by design)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        # the run folder holds its TensorBoard logs; stale checkpoints are refused or removed (train.run_dir)
        warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
        return build()
