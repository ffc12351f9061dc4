"""The optimiser of a fit (``optimisation``) and, for fine-tuning a pretrained encoder, its groups with a learning
rate that decays layer by layer.

``model.layer_lr_decay: d`` (< 1) gives layer k of a stack of L layers ``lr * encoder_lr_factor * d**(L-1-k)``: the
last layer (the most task-specific) learns fastest, the first ones barely move, and what lies below every layer
(embeddings) gets ``d**L`` (BEiT/ELECTRA-style layer-wise decay, as MatterTune offers for its backbones). Each
backbone of a ``FoundationEncoder`` is its own stack (``Encoder.layer_stacks``). ``d = 1``: one encoder group.

Heads first, then the encoder (two-stage fine-tuning) is Lightning's own ``BackboneFinetuning`` callback: the model's
``backbone`` is its encoder, frozen until ``unfreeze_backbone_at_epoch`` and then added to the optimiser, e.g.

    trainer:
      callbacks:
        - class_path: lightning.pytorch.callbacks.BackboneFinetuning
          init_args: {unfreeze_backbone_at_epoch: 10, backbone_initial_ratio_lr: 0.1}
"""

from __future__ import annotations

import torch


def encoder_param_groups(encoder, trainable: list[torch.nn.Parameter], lr: float, decay: float) -> list[dict]:
    """Optimiser groups of the encoder's ``trainable`` parameters: one at ``lr``, or one per layer (and one for
    everything below the layers) with ``lr * decay ** depth``, depth counted from each stack's last layer."""
    ids = {id(p) for p in trainable}
    if decay == 1.0:
        return [{"params": [p for p in trainable], "lr": lr}]
    groups, placed = [], set()
    for stack in encoder.layer_stacks():
        for depth, layer in enumerate(reversed(stack)):
            params = [p for p in layer.parameters() if id(p) in ids and id(p) not in placed]
            placed |= {id(p) for p in params}
            groups.append({"params": params, "lr": lr * decay ** depth})
    deepest = max((len(stack) for stack in encoder.layer_stacks()), default=0)
    groups.append({"params": [p for p in trainable if id(p) not in placed], "lr": lr * decay ** deepest})
    return [g for g in groups if g["params"]]


def optimisation(model, loss_parameters, hparams) -> dict | torch.optim.Optimizer:
    """AdamW over ``model``'s trainable parameters in groups: the heads (and everything else) at ``lr``, the
    encoder at ``lr * encoder_lr_factor`` with layer-wise decay (``encoder_param_groups``), the task weighting's
    ``loss_parameters`` without weight decay; and the schedule ``hparams.scheduler`` names (Lightning's format)."""
    weighting = set(id(p) for p in loss_parameters)
    encoder = set(id(p) for p in model.encoder.parameters())
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in trainable if id(p) not in weighting | encoder]},
              *encoder_param_groups(model.encoder, [p for p in trainable if id(p) in encoder],
                                    hparams.lr * hparams.encoder_lr_factor, hparams.layer_lr_decay),
              {"params": [p for p in trainable if id(p) in weighting], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=hparams.lr, weight_decay=hparams.weight_decay)
    if hparams.scheduler == "none":
        return optimizer
    if hparams.scheduler == "cosine":
        epochs = max(int(model.trainer.max_epochs or 1), 1)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=0.01 * hparams.lr)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=hparams.plateau_patience)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val/loss"}}
