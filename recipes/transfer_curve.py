"""Transfer learning: scratch vs fine-tuned vs frozen-encoder models on N labels of a scarce task.

    equiprop fit -c recipes/pretrain_ef_eg.yaml
    python recipes/transfer_curve.py --pretrained checkpoints/pretrain_ef_eg/best.ckpt --task K_VRH \
        --sizes 50 100 200 400 all --seeds 0 1 2 --out transfer_curve [--trainer.max_epochs=60]

All three use the pretrained model's own encoder architecture (read from the checkpoint); the grouped split and its
held-out test set are fixed, the training part subsampled per seed. Writes transfer_curve.csv and .png.
"""

import argparse
from pathlib import Path

import torch

from equiprop.workflows.curves import run_study
from equiprop.workflows.recipe import load_recipe, set_dotted

HERE = Path(__file__).resolve().parent


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrained", required=True)
    parser.add_argument("--task", default="K_VRH")
    parser.add_argument("--sizes", nargs="+", default=["50", "100", "200", "400", "all"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--recipe", default=str(HERE / "finetune_kg.yaml"), help="trainer/data/optimiser settings")
    parser.add_argument("--out", default="transfer_curve")
    args, overrides = parser.parse_known_args()
    meta = torch.load(args.pretrained, map_location="cpu", weights_only=True)["equiprop"]
    base = load_recipe(args.recipe)
    base = set_dotted(base, "model.encoder", {"class_path": meta["encoder"]["class_path"],
                                              "init_args": {k: v for k, v in meta["encoder"]["init_args"].items()
                                                            if k != "cutoff"}})
    base = set_dotted(base, "data.cutoff", meta["encoder"]["init_args"]["cutoff"])
    base["model"].pop("init_from", None)
    scratch = dict(base, model={k: v for k, v in base["model"].items() if k not in ("finetune", "encoder_lr_factor")})
    finetuned = set_dotted(base, "model.init_from", args.pretrained)
    frozen = set_dotted(set_dotted(finetuned, "model.finetune", "frozen_encoder"), "model.encoder_lr_factor", 1.0)
    models = {"scratch": scratch, "fine-tuned": set_dotted(finetuned, "model.finetune", "all"),
              "frozen encoder": frozen}
    run_study(models, args.task, args.sizes, args.seeds, Path(args.out), overrides)


if __name__ == "__main__":
    main()
