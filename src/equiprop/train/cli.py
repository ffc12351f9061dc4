"""LightningCLI for ``equiprop fit|validate|test -c recipes/X.yaml``: class_path configs, any value overridable.

One value, one place: ``data.cutoff`` feeds the encoder's cutoff and ``data.tasks`` the model's tasks (linked).
Runs write to ``checkpoints/<run_name>/``: best.ckpt and last.ckpt, TensorBoard logs and the resolved config.
"""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

from equiprop.data.datamodule import MultiTaskDataModule
from equiprop.train.callbacks import MetricsTable
from equiprop.train.module import MultiTaskModel

CHECKPOINT_ROOT = "checkpoints"


class EquipropCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--run_name", type=str, default="run", help="folder under checkpoints/ for this run")
        parser.link_arguments("data.cutoff", "model.encoder.init_args.cutoff")
        parser.link_arguments("data.tasks", "model.tasks", compute_fn=_task_list)
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.monitor": "val/loss", "checkpoint.filename": "best",
                             "checkpoint.save_last": True, "checkpoint.mode": "min"})

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        run_dir = Path(CHECKPOINT_ROOT) / config.run_name
        if config.checkpoint.dirpath is None:
            config.checkpoint.dirpath = str(run_dir)
        if config.trainer.default_root_dir is None:
            config.trainer.default_root_dir = str(run_dir)
        if config.trainer.logger is None or config.trainer.logger is True:
            config.trainer.logger = {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                                     "init_args": {"save_dir": str(run_dir), "name": "tensorboard"}}


def _task_list(tasks):
    from equiprop.data.datamodule import DEFAULT_TASKS

    return list(tasks) if tasks is not None else list(DEFAULT_TASKS)


def cli_kwargs() -> dict:
    """Arguments shared by every LightningCLI equiprop builds (fit/validate/test, tune trials, MatBench folds)."""
    return dict(model_class=MultiTaskModel, datamodule_class=MultiTaskDataModule,
                save_config_kwargs={"overwrite": True}, trainer_defaults={"callbacks": [MetricsTable()]},
                auto_configure_optimizers=False)


def run_lightning_cli(args: list[str]) -> None:
    quietly(lambda: EquipropCLI(args=args, **cli_kwargs()))


def quietly(build):
    """Build a LightningCLI from explicit args without its warning that sys.argv is also set (ours is by design)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        return build()
