"""Transfer learning: scratch vs fine-tuned vs frozen-encoder models on N labels of a scarce task.

    # from our own pretraining
    equiprop fit -c recipes/pretrain_ef_eg.yaml
    python recipes/transfer_curve.py --pretrained runs/pretrain_ef_eg/best.ckpt --task K_VRH \
        --sizes 50 100 200 400 all --seeds 0 1 2 --out transfer_curve [--trainer.max_epochs=60]
    # from the shipped model, to a task it never saw (its K_VRH readout as the new readout's start)
    python recipes/transfer_curve.py --shipped equiprop-mp-v1 --init-head K_VRH --recipe recipes/transfer_phonons.yaml \
        --task phdos_peak --sizes 50 100 200 all --seeds 0 1 2 --out docs/results/transfer_curve_shipped_phonons
    # from a pretrained universal potential (SevenNet-0 in the sevenn wheel)
    python recipes/transfer_curve.py --foundation 7net-0 --task K_VRH --out transfer_curve_foundation \
        [--models scratch frozen fine-tuned from-scratch]

With --pretrained all three use the pretrained model's own encoder architecture (read from the checkpoint). With
--foundation: "scratch" is our own equivariant encoder of the recipe trained from scratch, "frozen" heads on cached
SevenNet features, "fine-tuned" SevenNet's last layer trained (0.1 x lr) on cached outputs of the others, and
"from-scratch" SevenNet's architecture with random weights (the control; slow on CPU). The grouped split and its
held-out test set are fixed, the training part subsampled per seed. Writes <out>.csv and .png.
"""

import argparse
from pathlib import Path

import torch

from equiprop.workflows.curves import run_study
from equiprop.train.run import load_recipe, set_dotted

HERE = Path(__file__).resolve().parent


def own_pretrained(base: dict, path: str) -> dict:
    meta = torch.load(path, map_location="cpu", weights_only=True)["equiprop"]
    base = set_dotted(base, "model.encoder", {"class_path": meta["encoder"]["class_path"],
                                              "init_args": {k: v for k, v in meta["encoder"]["init_args"].items()
                                                            if k != "cutoff"}})
    base = set_dotted(base, "data.cutoff", meta["encoder"]["init_args"]["cutoff"])
    base["model"].pop("init_from", None)
    scratch = dict(base, model={k: v for k, v in base["model"].items() if k not in ("finetune", "encoder_lr_factor")})
    finetuned = set_dotted(base, "model.init_from", path)
    frozen = set_dotted(set_dotted(finetuned, "model.finetune", "frozen_encoder"), "model.encoder_lr_factor", 1.0)
    return {"scratch": scratch, "fine-tuned": set_dotted(finetuned, "model.finetune", "all"),
            "frozen encoder": frozen}


def foundation(base: dict, name: str) -> dict:
    base = dict(base, model={k: v for k, v in base["model"].items() if k not in ("init_from", "finetune")})
    scratch = set_dotted(base, "model.encoder_lr_factor", 1.0)

    def potential(transfer: str, **init_args) -> dict:
        recipe = set_dotted(base, "model.encoder", {"class_path": "equiprop.nn.FoundationEncoder",
                                                    "init_args": {"model": name, "transfer": transfer, **init_args}})
        return set_dotted(recipe, "data.cutoff", 5.0)

    return {"scratch": scratch, "frozen": set_dotted(potential("frozen"), "model.encoder_lr_factor", 1.0),
            "fine-tuned": set_dotted(potential("finetune", trainable_layers=1), "model.encoder_lr_factor", 0.1),
            "from-scratch": set_dotted(potential("from_scratch", cache_features=False), "model.encoder_lr_factor",
                                       1.0)}


def shipped(base: dict, name: str, init_head: str | None) -> dict:
    """From the shipped model (its encoder, and the readout of ``init_head`` as the new task's starting point) vs
    the same frozen SevenNet-0 features with a fresh readout vs our equivariant encoder from scratch."""
    base = dict(base, model={k: v for k, v in base["model"].items() if k not in ("init_from", "init_heads")})
    scratch_encoder = load_recipe(HERE / "quickstart.yaml")["model"]["encoder"]
    scratch = set_dotted(set_dotted(base, "model.encoder", scratch_encoder), "data.cutoff", 4.5)
    from_shipped = set_dotted(base, "model.init_from", name)
    return {"scratch": scratch, "SevenNet-0": base,
            name: set_dotted(from_shipped, "model.init_heads", "__TASK__") if init_head else from_shipped}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--pretrained", help="an equiprop checkpoint to transfer from")
    source.add_argument("--foundation", help="a pretrained potential to transfer from (7net-0, 7net-l3i5)")
    source.add_argument("--shipped", help="a shipped model to transfer from (equiprop-mp-v1); the recipe's encoder "
                                          "must be the model's (frozen SevenNet-0)")
    parser.add_argument("--init-head", help="with --shipped: the shipped task whose readout the new task starts from")
    parser.add_argument("--models", nargs="+", help="which of the compared models to run (default: all but "
                        "from-scratch with --foundation)")
    parser.add_argument("--task", default="K_VRH")
    parser.add_argument("--sizes", nargs="+", default=["50", "100", "200", "400", "all"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--recipe", default=str(HERE / "finetune_kg.yaml"), help="trainer/data/optimiser settings")
    parser.add_argument("--out", default="transfer_curve")
    args, overrides = parser.parse_known_args()
    base = load_recipe(args.recipe)
    if args.shipped:
        models = shipped(base, args.shipped, args.init_head)
        for recipe in models.values():  # the readout mapping names the study's task
            if recipe["model"].get("init_heads") == "__TASK__":
                recipe["model"]["init_heads"] = {args.task: args.init_head}
    else:
        models = own_pretrained(base, args.pretrained) if args.pretrained else foundation(base, args.foundation)
    chosen = args.models or [m for m in models if m != "from-scratch"]
    unknown = set(chosen) - set(models)
    if unknown:
        parser.error(f"unknown models {sorted(unknown)}; choose from {list(models)}")
    run_study({m: models[m] for m in chosen}, args.task, args.sizes, args.seeds, Path(args.out), overrides)


if __name__ == "__main__":
    main()
