"""Per-task checkpoint selection: every task's head from the epoch of its own lowest validation loss, in one
checkpoint that a real validate run scores at exactly those losses; refused where the tasks share trained weights."""

import lightning as L
import pytest
import torch

from equiprop.data.errors import ConfigError
from equiprop.nn import EquivariantEncoder
from equiprop.train.module import MultiTaskModel
from equiprop.train.per_task_best import PerTaskBest, selection_groups, shared_trained_names, task_owned_keys

TASKS = ["Ef", "Eg", "K_VRH"]


class EpochRecorder(L.Callback):
    """Each epoch's per-task validation losses and head weights, taken independently of PerTaskBest."""

    def __init__(self, monitor: str):
        self.key, self.losses, self.heads = "loss" if monitor == "loss" else "mae", [], []

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        self.losses.append({t: float(trainer.callback_metrics[f"val/{t}/{self.key}"]) for t in TASKS})
        self.heads.append({k: v.detach().clone() for k, v in pl_module.heads.state_dict().items()})


@pytest.mark.parametrize("monitor", ["loss", "mae"])
def test_each_head_comes_from_its_own_best_epoch(monitor, cli_recipe, tmp_path, monkeypatch):
    pytest.importorskip("sevenn")
    from equiprop.train.run import build_run

    monkeypatch.chdir(tmp_path)
    cli_recipe["trainer"].update(max_epochs=6, limit_train_batches=None, limit_val_batches=None, callbacks=[
        {"class_path": "equiprop.train.per_task_best.PerTaskBest", "init_args": {"monitor": monitor}}])
    cli_recipe["model"] = {"encoder": {"class_path": "equiprop.nn.FoundationEncoder",
                                       "init_args": {"model": "7net-0", "transfer": "frozen",
                                                     "cache_dir": str(tmp_path / "features")}},
                           "lr": 0.01, "scheduler": "none", "weighting": "fixed"}
    cli_recipe["data"].update(tasks=TASKS, cutoff=5.0, cache_dir=str(tmp_path / "graphs"))
    trainer, model, datamodule = build_run(cli_recipe)
    recorder = EpochRecorder(monitor)
    trainer.callbacks.append(recorder)
    trainer.fit(model, datamodule=datamodule)

    path = tmp_path / "runs" / "tiny" / "per_task_best.ckpt"
    saved = torch.load(path, weights_only=True)
    chosen = {t: min(range(6), key=lambda e: recorder.losses[e][t]) for t in TASKS}
    kept = next(v for k, v in saved["callbacks"].items() if k.startswith("PerTaskBest"))["best"]
    assert {t: kept[t]["epoch"] for t in TASKS} == chosen
    for task, epoch in chosen.items():
        heads = {k: v for k, v in saved["state_dict"].items() if k.startswith(f"heads.{task}.")}
        assert heads and all(torch.equal(v, recorder.heads[epoch][k[len("heads."):]]) for k, v in heads.items())
    # scored again by a real validate run, the merged checkpoint gives each task its best epoch's loss
    scores = trainer.validate(model, datamodule=datamodule, ckpt_path=str(path), verbose=False)[0]
    for task, epoch in chosen.items():
        assert scores[f"val/{task}/{recorder.key}"] == pytest.approx(recorder.losses[epoch][task], rel=1e-5,
                                                                      abs=1e-7)
    assert len(set(chosen.values())) > 1 or chosen == {t: 5 for t in TASKS}  # else best.ckpt would do


def test_a_trained_shared_encoder_is_refused(cli_recipe, tmp_path, monkeypatch):
    from equiprop.train.run import build_run

    monkeypatch.chdir(tmp_path)
    cli_recipe["trainer"]["callbacks"] = [{"class_path": "equiprop.train.per_task_best.PerTaskBest"}]
    cli_recipe["data"]["cache_dir"] = str(tmp_path / "graphs")
    trainer, model, datamodule = build_run(cli_recipe)
    with pytest.raises(ConfigError, match=r"trained parameters are shared by the tasks \(e\.g\. encoder\."):
        trainer.fit(model, datamodule=datamodule)
    with pytest.raises(ConfigError, match="plain name ending in .ckpt"):
        PerTaskBest(filename="../elsewhere.ckpt")
    with pytest.raises(ConfigError, match="monitor must be loss or mae"):
        PerTaskBest(monitor="rmse")


def test_a_penn_prior_is_chosen_with_the_gap_it_reads():
    encoder = EquivariantEncoder(cutoff=4.5, max_ell=1, multiplicities=[8, 4], num_layers=1)
    tasks = ["Ef", "Eg", {"name": "eps_electronic", "parametrization": "spd_log"}]
    model = MultiTaskModel(encoder, tasks, priors={"eps_electronic": "penn"})
    assert selection_groups(model) == [["Ef"], ["Eg", "eps_electronic"]]
    assert "priors.penn_offset" in task_owned_keys(model, "eps_electronic")
    assert "priors.gains.eps_electronic" in task_owned_keys(model, "eps_electronic")
    assert not any(k.startswith("priors") for k in task_owned_keys(model, "Ef"))
    for p in model.encoder.parameters():
        p.requires_grad_(False)
    assert shared_trained_names(model) == []  # loss weights change no prediction
    assert shared_trained_names(MultiTaskModel(encoder, ["Ef", "Eg"])) == []
