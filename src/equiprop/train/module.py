"""The LightningModule: shared encoder + one readout per task + masked multi-task loss with task weighting."""

from __future__ import annotations

from typing import Literal

import lightning as L
import torch
from torch import nn

from equiprop.data import keys
from equiprop.data.errors import ConfigError, check_choice
from equiprop.data.graph import atoms_per_graph
from equiprop.data.precision import upcast
from equiprop.data.tasks import TaskSpec, resolve_task, resolve_tasks
from equiprop.nn.base import Encoder, describe
from equiprop.nn.blocks import MAX_Z, EdgeGeometryBlock, FeatureDropoutBlock
from equiprop.nn.ewald import LongRangeBlock
from equiprop.nn.gradients import gradient_tasks, with_energy_derivatives
from equiprop.nn.denoise import IRREPS_READ as DENOISE_READS, DenoisingReadoutBlock, denoising_loss
from equiprop.nn.heads import build_head, irreps_read
from equiprop.nn.priors import PRIOR_QUANTITY, PhysicsPriors
from equiprop.data.kinds import REGRESSION_LOSSES
from equiprop.train.loss import FixedWeighting, UncertaintyWeighting
from equiprop.train.finetune import optimisation
from equiprop.train.metrics import DERIVED, DerivedMetrics, TaskMetrics, labelled_rows
from equiprop.train.normalizer import TaskNormalizer
from equiprop.train.potential_replay import PotentialReplay
from equiprop.train.transfer import check_layout, frozen_parameters, load_pretrained, pretrained_layout, \
    read_pretrained

# the string choices: Literal types, so LightningCLI rejects a misspelling and lists the allowed values
Weighting = Literal["uncertainty", "fixed"]
Loss = Literal["mse", "mae", "huber"]
Scheduler = Literal["cosine", "plateau", "none"]
Finetune = Literal["all", "frozen_encoder", "last_layers"]
PriorName = Literal["potential_energy", "potential_stiffness", "potential_bulk_modulus", "potential_shear_modulus",
                    "penn"]  # nn.priors.PRIOR_QUANTITY
assert set(Loss.__args__) == set(REGRESSION_LOSSES)
assert set(PriorName.__args__) == set(PRIOR_QUANTITY)


class MultiTaskModel(L.LightningModule):
    """Encoder + per-task readouts, trained on masked labels.

    Args:
        encoder: an ``equiprop.nn.Encoder`` (EquivariantEncoder, InvariantEncoder, FoundationEncoder, ...).
        tasks: task names or definitions (normally linked from the data section).
        weighting: "uncertainty" (Kendall et al. 2018, learned) or "fixed".
        task_weights: fixed weights per task (weighting="fixed"; default 1).
        loss: regression loss in normalised units: "mse", "mae" or "huber" (binary tasks: cross-entropy).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay (not applied to the task log-variances).
        scheduler: "cosine" (to 1% of lr over max_epochs), "plateau" (on val/loss) or "none".
        plateau_patience: epochs without improvement before the plateau schedule halves the lr.
        init_from: pretrained checkpoint, or a shipped model's name (``equiprop models``; its first member): its
            encoder and the heads of identically defined tasks are reused.
        init_heads: with init_from, new tasks whose readout starts from a pretrained task's readout,
            ``{new_task: pretrained_task}`` (e.g. ``{phdos_peak: K_VRH}``); their normalisation comes from this data.
        finetune: what trains after init_from: "all", "frozen_encoder" or "last_layers".
        trainable_layers: with finetune="last_layers", how many of the last interaction blocks train.
        encoder_lr_factor: learning rate of the (trainable) encoder relative to ``lr``.
        layer_lr_decay: with it < 1, each encoder layer's learning rate is this times the next one's (``train.finetune``).
        isotropic_weight: weight of a tensor task's isotropic-part (0e) loss.
        anisotropic_weight: weight of a tensor task's anisotropic-part (l>0) loss.
        warmup_epochs: linear learning-rate warmup from lr/10 over this many epochs (fractions allowed; 0: none).
        environment_channels: tensor readouts also read the spherical harmonics of each atom's neighbour directions
            (radially weighted, this many channels per l) for the l>0 irreps of their tensor, e.g. l=4 of the
            elastic tensor, which l<=2 features cannot give at cubic sites (0: off).
        dropout: probability of dropping each irrep of the encoder's per-atom features before the readouts, in
            training; a model trained with it predicts with Monte-Carlo-dropout uncertainty (``mc_samples`` in
            ``equiprop predict`` / ``equiprop.uncertainty``; 0: off).
        priors: ``{task: prior}``: the task's head learns a correction to a physical estimate of the pretrained
            potential (``potential_energy``, ``potential_stiffness``, ``potential_bulk_modulus``,
            ``potential_shear_modulus``) or of Penn's model (``penn``); see ``equiprop.nn.priors``.
        prior_potential: the pretrained potential the priors run (``7net-0``).
        prior_relaxed_ion: stiffness priors relax the atoms at each strain (slower; clamped-ion otherwise).
        head_hidden: width of every readout's invariant MLP.
        head_layers: hidden-to-hidden layers of that MLP (depth of the heads).
        denoise_weight: weight of an auxiliary denoising loss on training batches noised by ``data.augment``: each
            atom's displacement predicted from the noised structure (``nn.denoise``; mean squared error, Å^2);
            ~0.1 / noise^2 weighs it like a tenth of a normalised task loss. 0: off (no readout is built).
        long_range: append the crystal's electrostatics to the features every readout reads (``nn.ewald``: learned
            neutral charges and their Ewald sum; per atom q, phi and the cell's energy per atom (0e), and the cell's
            polarisation (1o)).
        potential_replay: with a fine-tuned backbone, the weight of a loss that keeps its own energies and forces
            close to the pretrained potential's on rattled copies of the training crystals (``train.potential_replay``;
            0: off).
        replay_rattle: standard deviation of those copies' displacements, Å; replay_structures: how many per step.
    """

    def __init__(self, encoder: Encoder, tasks: list[str | dict], weighting: Weighting = "uncertainty",
                 task_weights: dict[str, float] | None = None, loss: Loss = "mse", lr: float = 2e-3,
                 weight_decay: float = 0.0, scheduler: Scheduler = "cosine", plateau_patience: int = 5,
                 init_from: str | None = None, init_heads: dict[str, str] | None = None,
                 finetune: Finetune = "all", trainable_layers: int = 1,
                 encoder_lr_factor: float = 1.0, layer_lr_decay: float = 1.0, isotropic_weight: float = 1.0, anisotropic_weight: float = 1.0,
                 warmup_epochs: float = 0.0, environment_channels: int = 0, dropout: float = 0.0,
                 priors: dict[str, PriorName] | None = None, prior_potential: str = "7net-0",
                 prior_relaxed_ion: bool = False, head_hidden: int = 64, head_layers: int = 1,
                 long_range: bool = False, potential_replay: float = 0.0, replay_rattle: float = 0.05,
                 replay_structures: int = 8, denoise_weight: float = 0.0):
        super().__init__()
        for option, value, choices in (("model.weighting", weighting, Weighting), ("model.loss", loss, Loss),
                                       ("model.scheduler", scheduler, Scheduler),
                                       ("model.finetune", finetune, Finetune)):
            check_choice(option, value, choices)
        if not 0 < layer_lr_decay <= 1:
            raise ConfigError(f"model.layer_lr_decay must be in (0, 1], got {layer_lr_decay}")
        for option, value in (("model.lr", lr), ("model.weight_decay", weight_decay),
                              ("model.encoder_lr_factor", encoder_lr_factor), ("model.warmup_epochs", warmup_epochs),
                              ("model.environment_channels", environment_channels),
                              ("model.potential_replay", potential_replay),
                              ("model.denoise_weight", denoise_weight)):
            if value < 0 or (option == "model.lr" and value == 0):
                raise ConfigError(f"{option} must be {'> 0' if option == 'model.lr' else '>= 0'}, got {value}")
        if not 0 <= dropout < 1:
            raise ConfigError(f"model.dropout must be in [0, 1), got {dropout}")
        unknown = set(task_weights or {}) - {resolve_task(t).name for t in tasks}
        if unknown:
            raise ConfigError(f"model.task_weights names tasks the model does not have: {sorted(unknown)}")
        self.save_hyperparameters(ignore=["encoder"])
        self.encoder = encoder
        self.tasks: dict[str, TaskSpec] = resolve_tasks(tasks)
        if head_hidden < 1 or head_layers < 0:
            raise ConfigError(f"model.head_hidden must be >= 1 and model.head_layers >= 0, got {head_hidden}, "
                              f"{head_layers}")
        # the last layer carries what the heads read (output_irreps: auto), or what a pretrained encoder carries
        pretrained = read_pretrained(init_from) if init_from else None
        encoder.fit_output(set().union(*(irreps_read(t, encoder.irreps_out) for t in self.tasks.values()))
                           | (DENOISE_READS if denoise_weight > 0 else set()),
                           pretrained_layout(pretrained, encoder) if pretrained else None)
        # forces and stress are derivatives of an energy task (autograd), not readouts: {task: its energy task}
        self.gradient_tasks = gradient_tasks(self.tasks, priors)
        # charges from the encoder's 0e channels (fit_output keeps 0e); their Ewald sum is appended for the heads
        self.long_range = LongRangeBlock(encoder.irreps_out) if long_range else None
        head_irreps = self.long_range.irreps_out if long_range else encoder.irreps_out
        self.heads = nn.ModuleDict({name: build_head(t, head_irreps, environment_channels, encoder.cutoff,
                                                     head_hidden, head_layers) for name, t in self.tasks.items()
                                    if name not in self.gradient_tasks})
        ells = sorted({l for head in self.heads.values() if getattr(head, "environment", None) is not None
                       for l in head.environment.ells})
        self.edge_geometry = EdgeGeometryBlock(ells) if ells else None
        self.denoise = DenoisingReadoutBlock(encoder.irreps_out) if denoise_weight > 0 else None
        self.feature_dropout = FeatureDropoutBlock(encoder.irreps_out, dropout)
        self.normalizer = TaskNormalizer(self.tasks)
        self.replay = PotentialReplay(encoder, replay_rattle, replay_structures) if potential_replay > 0 else None
        self.priors = PhysicsPriors(self.tasks, priors, prior_potential, prior_relaxed_ion,
                                    cache_dir=getattr(encoder, "cache_dir", None), encoder=encoder) if priors else None
        names = list(self.tasks)
        self.weighting = UncertaintyWeighting(names) if weighting == "uncertainty" else FixedWeighting(
            names, task_weights)
        self.metrics = nn.ModuleDict({stage: nn.ModuleDict({n: TaskMetrics(t) for n, t in self.tasks.items()})
                                      for stage in ("val", "test")})
        self.derived = nn.ModuleDict({stage: DerivedMetrics(self.tasks) for stage in ("val", "test")})
        self.tensor_parts: dict[str, list[str]] = {}  # task -> its loss parts (tensors: "isotropic", "anisotropic")
        for name, task in self.tasks.items():
            columns = task.kind_def.loss_columns(task)
            if columns:
                self.tensor_parts[name] = list(columns)
                for part, index in columns.items():  # (k,) irreps columns of the part
                    self.register_buffer(f"columns_{part}_{name}", index, persistent=False)
        self.register_buffer("species_seen", torch.zeros(MAX_Z + 1, dtype=torch.bool))  # elements of the fit data
        self.pretrained_label_counts: dict[str, int | None] = {}  # of the reused heads, set by load_pretrained
        if init_heads and not init_from:
            raise ConfigError("model.init_heads needs model.init_from (the checkpoint the heads come from)")
        self.reused_tasks = load_pretrained(self, pretrained, init_heads or {}) if init_from else []
        self.frozen = frozen_parameters(self, finetune, trainable_layers) if init_from else []
        for p in self.frozen:
            p.requires_grad_(False)

    # -- data-dependent state, set once from the training data ---------------------------------------------------
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if stage != "fit" or datamodule is None:
            return
        datamodule.setup(stage)
        if abs(datamodule.cutoff - self.encoder.cutoff) > 1e-9:
            raise ConfigError(f"the encoder's cutoff ({self.encoder.cutoff} Å) differs from the data's neighbour-list "
                              f"cutoff ({datamodule.cutoff} Å); set one value (the CLI links data.cutoff to it)")
        if getattr(self.encoder, "full_neighbor_list", False) and datamodule.max_neighbors is not None:
            raise ConfigError(f"{type(self.encoder).__name__} needs every neighbour within its cutoff, as in its "
                              f"pretraining; set data.max_neighbors: null (got {datamodule.max_neighbors})")
        if getattr(datamodule, "augment", None) is not None and datamodule.augment.active and (
                self.priors is not None or self.replay is not None or getattr(self.encoder, "descriptor_names", [])):
            raise ConfigError("data.augment with model.priors, descriptors or model.potential_replay: they compute "
                              "the potential's physics per structure and would redo it for every augmented copy")
        missing = set(self.tasks) - set(datamodule.tasks)
        if missing:
            raise ConfigError(f"the model predicts tasks the data does not define: {sorted(missing)}")
        statistics = datamodule.train_statistics  # of the training split only, like the normalisation
        counts = datamodule.report["label_counts"]["train"]
        self.train_label_counts = {name: int(counts.get(name, 0)) for name in self.tasks}
        for name in self.reused_tasks:  # its head also learned from the pretraining labels
            before = self.pretrained_label_counts.get(name)  # None: an older checkpoint did not count them
            self.train_label_counts[name] = None if before is None else self.train_label_counts[name] + before
        untrained = [name for name, count in self.train_label_counts.items() if count == 0]
        if untrained:
            per_split = {n: {split: c[n] for split, c in datamodule.report["label_counts"].items()} for n in untrained}
            raise ConfigError(f"tasks with no label in the training split: {untrained} (labels per split: "
                              f"{per_split}); a head trained on nothing would predict a constant: remove them from "
                              "data.tasks or add a source that has them")
        species = torch.as_tensor(statistics["species"], dtype=torch.long)
        if self.hparams.init_from:  # keep the pretrained encoder's state; new tasks get this data's statistics
            unseen = [int(z) for z in species if not self.species_seen[z]]
            if unseen and self.hparams.finetune != "all":  # a frozen embedding of a new element stays random
                from ase.data import chemical_symbols

                raise ConfigError(f"init_from {self.hparams.init_from}: the training data holds elements the "
                                  f"pretrained model never saw: {[chemical_symbols[z] for z in unseen]}, whose "
                                  f"embeddings finetune={self.hparams.finetune!r} would keep untrained; use "
                                  "finetune: all or leave those structures out")
            self.species_seen[species] = True  # finetune all: the new elements' embeddings train here
            self.normalizer.set_stats({n: s for n, s in datamodule.normalization.items()
                                       if n not in self.reused_tasks})
            return
        self.normalizer.set_stats(datamodule.normalization)
        self.species_seen[species] = True
        self.encoder.set_avg_num_neighbors(statistics["avg_num_neighbors"])
        self._fit_priors(datamodule)

    def _fit_priors(self, datamodule) -> None:
        """Elemental references of ``potential_energy`` priors, by least squares on the training split."""
        if self.priors is None:
            return
        from torch_geometric.loader import DataLoader

        for name in [n for n, p in self.priors.priors.items() if p == "potential_energy"]:
            loader = DataLoader(datamodule.subsets["train"], batch_size=64, shuffle=False)
            fit = self.priors.fit_references(loader, name)
            print(f"priors: {name} references of {fit['elements']} elements fitted on {fit['labels']} training "
                  f"labels; the prior alone: MAE {fit['mae']:.4f} {self.tasks[name].units}")

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        check_layout(checkpoint.get("equiprop", {}).get("encoder"), self.encoder)
        counts = checkpoint.get("equiprop", {}).get("train_label_counts")
        if counts is not None:  # a resumed fit keeps recording what the heads were trained on
            self.train_label_counts = dict(counts)

    # -- forward --------------------------------------------------------------------------------------------------
    def forward(self, batch, tasks: list[str] | None = None, features: torch.Tensor | None = None,
                rows: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Normalised model-space predictions {task: (num_graphs, *shape)}, (num_nodes, *shape) for per-atom tasks
        (logits for binary tasks).
        ``features``: the encoder's output for ``batch`` when already computed (ensemble members that share one
        frozen encoder run it once). ``rows``: per task, the structures whose prediction is used (a prior is
        estimated only there; training passes the label masks)."""
        names = list(tasks if tasks is not None else self.tasks)
        if any(n in self.gradient_tasks for n in names):  # forces, stress: one backward pass of the energy
            return with_energy_derivatives(lambda data, heads: self._forward_heads(data, heads, None, rows),
                                           self.normalizer, self.tasks, self.gradient_tasks, batch, names)
        return self._forward_heads(batch, names, features, rows)

    def _forward_heads(self, batch, names: list[str], features: torch.Tensor | None, rows: dict | None) -> dict:
        features = self.encoder(batch) if features is None else features
        # float32 into the heads under autocast (an invariant encoder's are bf16): their norms and geometry read it
        features = self.feature_dropout(upcast(features))
        if self.long_range is not None:  # after dropout: MC-dropout uncertainty reaches the charges
            features = self.long_range(features, batch)
        # edge vectors and harmonics once per forward for every tensor readout that reads the neighbour shell
        geometric = any(getattr(self.heads[n], "environment", None) is not None for n in names)
        edges = self.edge_geometry(batch, features.dtype) if geometric else None
        out = {name: self.heads[name](features, batch, edges) for name in names}
        if self.priors is None:
            return out
        gap = self.priors.penn_gap_task
        extra = {gap: self.heads[gap](features, batch, edges)} if gap and gap not in out and any(
            self.priors.priors.get(n) == "penn" for n in names) else {}
        with_priors = self.priors.apply(batch, {**out, **extra}, self.normalizer, rows, self.encoder)
        return {name: with_priors[name] for name in names}

    def predict_physical(self, batch, tasks: list[str] | None = None, features: torch.Tensor | None = None
                         ) -> dict[str, torch.Tensor]:
        """Predictions in physical units (tensors Cartesian; binary: probability) of ``tasks`` (default: all): one row
        per structure, or per atom for a per-atom task."""
        num_atoms = atoms_per_graph(batch)  # extensive (sum-pooled) tasks scale with the structure's atoms
        return {n: self.normalizer.to_physical(n, y, num_atoms) for n, y in self(batch, tasks, features).items()}

    def _step(self, batch, stage: str) -> torch.Tensor:
        # labels per task, read in one device->host copy, the step's only sync: which heads run (an absent task gets
        # no gradient, its weight none either), the batch size each loss is logged with, and how many rows each task
        # selects (labelled_rows: no sync of its own, where a bool mask needs one per task)
        counts = dict(zip(self.tasks, torch.stack([batch[keys.mask_key(n)].sum() for n in self.tasks]).tolist()))
        present = [n for n in self.tasks if counts[n] > 0]
        rows = {n: self._rows_used(batch, n) for n in present} if self.priors is not None else None
        denoising = stage == "train" and self.denoise is not None and keys.NOISE in batch  # data.augment's noise
        features = self.encoder(batch) if denoising else None  # shared by the heads and the denoising readout
        predictions = self(batch, present, features, rows)  # heads of absent tasks are not even run: zero gradient
        num_atoms = atoms_per_graph(batch)
        losses = {}
        for name in present:
            labelled = labelled_rows(batch[keys.mask_key(name)], counts[name])  # rows of graphs, or atoms (level)
            pred, labels = predictions[name][labelled], batch[keys.label_key(name)][labelled]
            atoms = num_atoms[labelled] if self.tasks[name].level == "structure" else None  # extensive: per atom
            target = self.normalizer.normalise(name, labels, atoms)
            columns = {part: getattr(self, f"columns_{part}_{name}") for part in self.tensor_parts.get(name, ())}
            losses[name], parts = self.tasks[name].kind_def.loss(pred, target, self.hparams.loss, columns,
                                                                 self.hparams.isotropic_weight,
                                                                 self.hparams.anisotropic_weight)
            for part, value in parts.items():
                self.log(f"{stage}/{name}/loss_{part}", value, batch_size=counts[name], sync_dist=stage != "train")
            self.log(f"{stage}/{name}/loss", losses[name], batch_size=counts[name], sync_dist=stage != "train")
            if stage != "train":
                self._update_metrics(stage, name, pred, labels, atoms)
        if stage != "train":
            self.derived[stage].update(lambda source: predictions[source] if source in predictions else
                                       self(batch, [source])[source], self.normalizer, batch, counts)
        total = self.weighting(losses, {n: self.tasks[n].kind_def.weighting_factor for n in losses})
        if self.replay is not None and stage == "train":  # the backbone stays a potential while it learns
            replay = dict(zip(("energy", "forces"), self.replay(self.encoder.backbones[0], batch)))
            for part, value in replay.items():
                self.log(f"train/replay_{part}", value, batch_size=batch.num_graphs)
            total = total + self.hparams.potential_replay * sum(replay.values())
        # the unweighted sum of normalised losses is comparable across runs and weightings: used for selection
        plain = sum(losses.values())
        self.log(f"{stage}/loss", plain, batch_size=batch.num_graphs, prog_bar=True, sync_dist=stage != "train")
        if denoising:  # training only, not in the selection loss above
            denoise = denoising_loss(self.denoise(features), batch)  # Å^2
            self.log("train/denoise/loss", denoise, batch_size=batch.num_graphs)
            total = total + self.hparams.denoise_weight * denoise
        self.log(f"{stage}/weighted_loss", total, batch_size=batch.num_graphs, sync_dist=stage != "train")
        return total

    def _rows_used(self, batch, name: str) -> torch.Tensor:
        """(num_graphs,) bool: structures whose prediction of ``name`` a step uses (its labels, and those of the
        tasks a derived metric compares it with)."""
        mask = batch[keys.mask_key(name)].clone()
        for source, reference, _ in DERIVED.values():
            if source == name and reference in self.tasks:
                mask |= batch[keys.mask_key(reference)]
        return mask

    def _update_metrics(self, stage: str, name: str, pred_norm: torch.Tensor, target_model: torch.Tensor,
                        num_atoms: torch.Tensor | None) -> None:
        physical_target = self.normalizer.model_to_physical(name, target_model)
        self.metrics[stage][name].update(self.normalizer.to_physical(name, pred_norm, num_atoms), physical_target)

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def _log_metrics(self, stage: str) -> None:
        for name, metrics in self.metrics[stage].items():
            for metric, value in metrics.compute().items():
                self.log(f"{stage}/{name}/{metric}", value)
            metrics.reset()
        for name, value in self.derived[stage].compute().items():
            self.log(f"{stage}/{name}", value)

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    def train(self, mode: bool = True):
        super().train(mode)
        if self.hparams.get("finetune") == "frozen_encoder" and self.frozen:
            self.encoder.eval()  # frozen means frozen: no BatchNorm statistics update either
        return self

    def on_train_epoch_end(self) -> None:
        for name, weight in self.weighting.task_weights().items():
            self.log(f"weight/{name}", weight)

    # -- optimisation ---------------------------------------------------------------------------------------------
    @property
    def backbone(self):  # Lightning's BackboneFinetuning (heads first, then the encoder) finds the encoder here
        return self.encoder

    def configure_optimizers(self):
        return optimisation(self, self.weighting.parameters(), self.hparams)

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None):
        """Linear warmup from lr/10 over ``warmup_epochs``, on top of whatever schedule follows it."""
        warmup_steps = self.hparams.warmup_epochs * max(int(self.trainer.num_training_batches or 1), 1)
        if self.global_step < warmup_steps:
            fraction = 0.1 + 0.9 * (self.global_step + 1) / warmup_steps
            for group in optimizer.param_groups:
                base = group.setdefault("warmup_base_lr", group.get("initial_lr", group["lr"]))
                group["lr"] = fraction * base
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)

    # -- checkpoint content that prediction needs, in plain types --------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        graph = dict(datamodule.graph_params) if datamodule is not None else {}
        checkpoint["equiprop"] = {
            "encoder": describe(self.encoder),
            "tasks": {n: t.to_config() for n, t in self.tasks.items()},
            "max_neighbors": graph.get("max_neighbors"),
            "graph": graph,  # cutoff, max_neighbors, min_neighbors: prediction builds graphs the same way
            "train_label_counts": getattr(self, "train_label_counts", None),
        }
