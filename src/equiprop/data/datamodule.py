"""The multi-task LightningDataModule: sources -> merged records -> cached periodic graphs -> splits -> loaders."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DistributedSampler
from torch_geometric.loader import DataLoader

from equiprop.data import keys
from equiprop.data.augment import Augmentation, AugmentationCounts, augment_batch, batch_generator
from equiprop.data.dataset import (CORRUPTED_CACHE, DEFAULT_CACHE_DIR, GraphDataset, build_graphs, cache_key,
                                   read_report, writable_cache_dir, write_report)
from equiprop.data.errors import ConfigError, DataError, check_choice
from equiprop.data.processes import DieWithParent
from equiprop.data.graph_store import CORRUPTED, OUTDATED, STORE_FORMAT_VERSION, GraphStore, build_store
from equiprop.data.stored_graphs import StoredGraphs
from equiprop.data.merge import CELL_TOL, MergeReport, merge_sources, merge_staged
from equiprop.data.normalization import TaskStats, compute_stats
from equiprop.data.report import format_summary, merge_summary, source_summary
from equiprop.data.sources.base import Source
from equiprop.data.sources.records_json import BundledDataset
from equiprop.data.splits import GroupedSplit, Split
from equiprop.data.tasks import per_atom_tasks, resolve_tasks

Storage = Literal["auto", "memory", "disk"]
AUTO_DISK_STRUCTURES = 50_000  # storage "auto": above this many records, graphs go to disk (~1.5 GB in memory)
DEFAULT_TASKS = ["Ef", "Eg", "K_VRH", "G_VRH", "eps_electronic", "eps_total", "elastic_tensor", "piezo_tensor"]


class MultiTaskDataModule(L.LightningDataModule):
    """Crystals from several sources merged into one table with masked labels, served as batched periodic graphs.

    Args:
        sources: readers (class_path configs); default: the bundled dataset.
        tasks: built-in task names, or dicts defining new tasks (name, key, units, kind, ...).
        cutoff: neighbour-list radius, Å.
        max_neighbors: keep only each atom's nearest neighbours (None: all within the cutoff).
        min_neighbors: every atom gets at least this many neighbours: where the cutoff gives fewer (elemental Rb's
            nearest neighbour is 5.05 Å), that structure's radius is extended and its edge lengths rescaled for the
            radial basis (``equiprop.data.graph.extended_radius``; 0: no extension, such structures are skipped).
        split: how structures are divided (default: seeded split grouped by chemical system).
        batch_size: training batch size (structures).
        eval_batch_size: validation/test/predict batch size (default: batch_size).
        num_workers: DataLoader worker processes.
        cache_dir: where processed graphs are cached (default ``$EQUIPROP_CACHE`` or ~/.cache/equiprop/graphs).
        merge_cell_tol: lattice tolerance (Å) for combining one material's labels from two sources.
        storage: where the graphs live: "memory" (one collated tensor store, fastest for small data), "disk" (an
            SQLite store written once in shards and read by the DataLoader workers, memory flat in the number of
            structures; ``equiprop.data.graph_store``), or "auto": memory up to ``AUTO_DISK_STRUCTURES`` records,
            disk beyond. Both give identical batches. With "disk", sources that stream (``ExtXYZ``) are read once
            and never held in memory; several sources are merged through an SQLite staging file.
        shared_cache: ``cache_dir`` is on a file system every node of a multi-node run shares: the graphs are built
            by global rank 0 alone (Lightning's ``prepare_data_per_node = False``) and read by every rank after
            the barrier. False (default): built once per node, for a node-local cache (a cluster's local scratch).
        augment: augmentation of training batches (never validation, test or prediction), a fresh draw per batch
            and epoch, reproducible under ``seed_everything``: ``{noise: 0.02, strain: 0.005, strain_fraction: 0.5}``
            or ``--data.augment.noise=0.02``. noise: Gaussian displacement of every atom, Å (labels kept: a small
            rattle, as in denoising pretraining; the displacement is ``keys.NOISE``, for a denoising head); strain:
            largest |component| of a random symmetric strain (scalar labels kept, tensor labels masked on strained
            structures); ``*_fraction``: share of structures augmented; ``strain_masked``: scalar tasks masked too.
            Masked labels are counted and reported. The physics of what is kept: ``equiprop.data.augment``.
    """

    def __init__(self, sources: list[Source] | None = None, tasks: list[str | dict] | None = None,
                 cutoff: float = 5.0, max_neighbors: int | None = None, split: Split | None = None,
                 batch_size: int = 32, eval_batch_size: int | None = None, num_workers: int = 0,
                 cache_dir: str | None = None, merge_cell_tol: float = CELL_TOL, min_neighbors: int = 1,
                 storage: Storage = "auto", shared_cache: bool = False, augment: Augmentation = Augmentation()):
        super().__init__()
        self.prepare_data_per_node = not shared_cache  # two nodes must not build one store on a shared disk at once
        self.sources = list(sources) if sources is not None else [BundledDataset("default")]
        self.tasks = resolve_tasks(tasks if tasks is not None else DEFAULT_TASKS)
        _check_options(cutoff=cutoff, batch_size=batch_size, eval_batch_size=eval_batch_size,
                       num_workers=num_workers, max_neighbors=max_neighbors, min_neighbors=min_neighbors,
                       merge_cell_tol=merge_cell_tol)
        self.cutoff, self.max_neighbors, self.min_neighbors = float(cutoff), max_neighbors, int(min_neighbors)
        self.split = split if split is not None else GroupedSplit()
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers = num_workers
        self.cache_dir = Path(cache_dir or os.environ.get("EQUIPROP_CACHE", DEFAULT_CACHE_DIR)).expanduser()
        self.merge_cell_tol = merge_cell_tol
        check_choice("data.storage", storage, Storage)
        self.augment = Augmentation.checked(augment, self.tasks)
        self.augmentation_counts = AugmentationCounts(list(self.tasks))
        self.storage = storage
        self.dataset: GraphDataset | None = None
        self._prepared: tuple | None = None  # load_graphs() of prepare_data, taken by setup
        self.subsets: dict[str, GraphDataset] = {}
        self.normalization: dict[str, TaskStats] = {}
        self.train_statistics: dict = {}
        self.report: dict = {}

    @property
    def graph_params(self) -> dict:
        return {"cutoff": self.cutoff, "max_neighbors": self.max_neighbors, "min_neighbors": self.min_neighbors,
                "merge_cell_tol": self.merge_cell_tol}

    @property
    def units(self) -> dict[str, str]:
        return {name: task.units for name, task in self.tasks.items()}

    # -- building -------------------------------------------------------------------------------------------------
    def load_graphs(self, damaged: DataError | None = None) -> tuple[GraphDataset | StoredGraphs, dict]:
        """All graphs and the build report, from the cache when its key matches and it passes its checks, else built
        and cached (in memory or on disk, ``storage``). A cache of ours that fails a check (a changed byte, row or
        column, a bad report, an older format; ``damaged``: a disk store whose rows ``setup`` found damaged) is
        rebuilt with a warning and the report's ``rebuilt`` says why: derived data, rebuilt identical to a fresh
        build, never read as numbers."""
        key = cache_key(self.sources, self.tasks, self.graph_params)
        path, report_path = self.cache_dir / f"{key}.pt", self.cache_dir / f"{key}.json"
        store = GraphStore(self.cache_dir / f"{key}.sqlite")
        stores, rebuilt = (store, store), None  # (where a disk build writes, where its store ends up)
        if damaged is not None:
            rebuilt, stores = self._rebuilding(damaged), (GraphStore(self.cache_dir / f"{key}.rebuild.sqlite"), store)
        elif path.exists() and self.storage != "disk":
            try:
                report = read_report(report_path)
                if not report.get("cache_sha256"):
                    raise DataError(str(path), "no checksum of the graph cache is recorded", CORRUPTED_CACHE)
                return GraphDataset.load_from(path, report["cache_sha256"]), {**report, "from_cache": True}
            except DataError as err:
                rebuilt = self._rebuilding(err)
        if store.path.exists() and self.storage != "memory" and damaged is None:
            try:
                cached = self._cached_store(store)
                if cached is not None:
                    return cached
            except DataError as err:
                rebuilt = self._rebuilding(err)
                if err.kind != CORRUPTED_CACHE:  # the store itself: built afresh beside it, then moved over it
                    stores = (GraphStore(self.cache_dir / f"{key}.rebuild.sqlite"), store)
        writable_cache_dir(self.cache_dir)  # before reading any source: a one-line error, not a late traceback
        graphs, report = self._build(key, path, report_path, stores)
        return graphs, {**report, "from_cache": False, **({"rebuilt": rebuilt} if rebuilt else {})}

    def _cached_store(self, store: GraphStore):
        """(graphs, report) of a complete store that passes its checks; None for a killed build (resumed)."""
        if store.meta("format") != STORE_FORMAT_VERSION:
            raise DataError(str(store.path), f"the graph store has format {store.meta('format')}, not "
                                             f"{STORE_FORMAT_VERSION} (an older equiprop wrote it)", OUTDATED)
        if not store.meta("complete"):
            return None
        index = store.index()  # verifies the row count and the digest of the split's columns
        report = read_report(_store_report(store))
        return StoredGraphs(store, self.tasks, index), {**report, "from_cache": True}

    def _rebuilding(self, err: DataError) -> str:
        """Why a damaged cache of ours is rebuilt (warned); a DataError if its folder cannot take the new one."""
        try:
            writable_cache_dir(self.cache_dir)
        except ConfigError as folder:
            raise DataError(err.where, f"{err.problem}, and it cannot be rebuilt: {folder}", err.kind) from None
        warnings.warn(f"{err}: rebuilt from the sources")
        return str(err)

    def _build(self, key: str, path: Path, report_path: Path, stores: tuple[GraphStore, GraphStore]):
        per_atom = per_atom_tasks(self.tasks)
        streaming = [source for source in self.sources if hasattr(source, "stream")]
        if streaming and (self.storage == "disk" or (self.storage == "auto" and sum(
                source.count() for source in streaming) > AUTO_DISK_STRUCTURES)):  # counted before anything is read
            return self._streamed_build(stores, key, per_atom)
        results = [source.load(self.tasks) for source in self.sources]
        records, merge_report = merge_sources(results, self.merge_cell_tol, per_atom)
        if self.storage == "disk" or (self.storage == "auto" and len(records) > AUTO_DISK_STRUCTURES):
            return self._build_on_disk(stores, records, results, merge_report)
        source_summaries = [source_summary(r) for r in results]
        graphs, graph_skips = build_graphs(records, self.tasks, self.cutoff, self.max_neighbors,
                                           self.min_neighbors)
        if not graphs:
            raise ConfigError("no structure could be read from the configured sources; skipped: "
                              f"{[(s['name'], s['skipped']) for s in source_summaries]}")
        dataset = GraphDataset(graphs)
        report = {"sources": source_summaries, "merge": merge_summary(merge_report),
                  "graph_skipped": {k: {"count": n, "examples": graph_skips.examples[k]}
                                    for k, n in graph_skips.counts.items()},
                  "num_graphs": len(graphs), "num_edges": int(sum(g.num_edges for g in graphs)),
                  "extended_radius": _extended(graphs),
                  "graph": self.graph_params, "cache_path": str(path)}
        report["cache_sha256"] = dataset.save_to(path)  # the graphs first: a report always names a whole file
        write_report(report_path, report)
        return dataset, report

    def _streamed_build(self, stores: tuple[GraphStore, GraphStore], key: str, per_atom: frozenset[str]):
        """A disk build whose streaming sources (``ExtXYZ``) are read once and never held: one streams straight into
        the store; several (or with in-memory sources) are merged through an SQLite staging file, removed after."""
        results, streams = [], []
        for source in self.sources:
            if hasattr(source, "stream"):
                result, records = source.stream(self.tasks)
            else:
                result = source.load(self.tasks)
                records = result.records
            results.append(result)
            streams.append(records)
        if len(streams) == 1:
            return self._build_on_disk(stores, streams[0], results, MergeReport())
        staging = self.cache_dir / f"{key}.staging.sqlite"
        records, merge_report = merge_staged(streams, staging, self.merge_cell_tol, per_atom)
        try:
            return self._build_on_disk(stores, records, results, merge_report)
        finally:
            records.connection.close()
            staging.unlink(missing_ok=True)

    def _build_on_disk(self, stores: tuple[GraphStore, GraphStore], records, results, merge_report):
        building, store = stores
        total = len(records) if hasattr(records, "__len__") else None
        built = build_store(building, records, self.tasks, self.graph_params, total=total)
        if building is not store:  # a rebuild beside a damaged store: replaces it whole, atomically
            building.close()
            store.close()
            Path(f"{store.path}-journal").unlink(missing_ok=True)  # the old file's journal must not touch the new
            os.replace(building.path, store.path)
        index = row_ids, _, _, _, edges = store.index()  # read once: the dataset holds it; verified
        summaries = [source_summary(r) for r in results]  # after the stream: its counts are complete
        if not len(row_ids):
            raise ConfigError("no structure could be read from the configured sources; skipped: "
                              f"{[(s['name'], s['skipped']) for s in summaries]}")
        skips = built["skips"]
        report = {"sources": summaries, "merge": merge_summary(merge_report),
                  "graph_skipped": {k: {"count": n, "examples": skips.examples[k]} for k, n in skips.counts.items()},
                  "num_graphs": len(row_ids), "num_edges": int(edges.sum()), "extended_radius": built["extended"],
                  "graph": self.graph_params, "cache_path": str(store.path), "storage": "disk",
                  "build": {k: built[k] for k in ("shards_built", "shards_resumed")}}
        write_report(_store_report(store), report)
        return StoredGraphs(store, self.tasks, index), report

    def prepare_data(self) -> None:
        """Lightning calls this on one process per node, then ``setup`` on every process after a barrier: the
        graphs are built (or found) once, and the other DDP ranks read them from the cache instead of building too."""
        if self.dataset is None and self._prepared is None:
            self._prepared = self.load_graphs()

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is not None:
            return
        self.dataset, report = self._prepared or self.load_graphs()
        self._prepared = None
        try:
            self._setup_splits(report)  # on disk: reads every row once, each checked against its CRC
        except DataError as err:
            if not isinstance(self.dataset, StoredGraphs) or err.kind != CORRUPTED or not report["from_cache"] or (
                    self.trainer and self.trainer.world_size > 1):
                raise  # several ranks must not rebuild one store at once
            self.dataset, report = self.load_graphs(damaged=err)
            self._setup_splits(report)

    def _setup_splits(self, report: dict) -> None:
        """Split, training statistics and label counts, through the dataset protocol (``equiprop.data.table``):
        the same for the in-memory and the on-disk dataset (one labels pass per split)."""
        split = self.split(self.dataset.structure_ids(), self.dataset.chemical_systems())
        self.subsets = {name: self.dataset.subset(idx) for name, idx in split.items()}
        if len(self.subsets["train"]) == 0:
            raise ConfigError("the training split is empty")
        labels = {name: subset.labels(self.tasks) for name, subset in self.subsets.items()}
        self.normalization = {name: compute_stats(labels["train"][name].values, task,
                                                  labels["train"][name].atoms if task.level == "structure" else None)
                              for name, task in self.tasks.items()}
        self.train_statistics = self.subsets["train"].statistics()
        report["splits"] = {name: len(s) for name, s in self.subsets.items()}
        report["kinds"] = {name: task.kind if task.level == "structure" else f"{task.kind}/atom"
                           for name, task in self.tasks.items()}
        rest = np.setdiff1d(np.arange(len(self.dataset)), np.concatenate([np.asarray(i, dtype=np.int64)
                                                                           for i in split.values()]))
        whole = [*labels.values(), *([self.dataset.subset(rest).labels(self.tasks)] if len(rest) else [])]
        report["label_counts"] = {"all": {n: sum(part[n].count for part in whole) for n in self.tasks}}
        report["label_counts"].update({name: {n: part[n].count for n in self.tasks} for name, part in labels.items()})
        self.report = report
        rank_zero_info(format_summary(report, self.units))

    @property
    def structure_ids(self) -> list[str]:
        return self.dataset.structure_ids()

    def summary(self) -> str:
        self.setup()
        return format_summary(self.report, self.units)

    # -- loaders --------------------------------------------------------------------------------------------------
    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        sampler = None
        if shuffle and (self.trainer is None or self.trainer.world_size == 1):
            # Seeded per epoch (Lightning calls set_epoch), so a resumed run sees the batches an uninterrupted run
            # would. Under DDP, Lightning injects its own DistributedSampler with the same property.
            sampler = DistributedSampler(self.subsets[name], num_replicas=1, rank=0, shuffle=True,
                                         seed=int(os.environ.get("PL_GLOBAL_SEED", 0)))
        # A DDP rank runs threads (gloo, multiprocessing queue feeders) while it forks its workers; CPython 3.11 can
        # then deadlock in the forked child before any Python runs. Spawned workers start from exec: no such state.
        distributed = self.trainer is not None and self.trainer.world_size > 1
        return DataLoader(self.subsets[name], batch_size=self.batch_size if shuffle else self.eval_batch_size,
                          shuffle=shuffle and sampler is None, sampler=sampler, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0,
                          multiprocessing_context="spawn" if self.num_workers and distributed else None,
                          worker_init_fn=DieWithParent() if self.num_workers else None)  # no orphan on kill -9

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Lightning calls this for every batch of every loop once it is on its device: training batches are
        augmented (``augment``), with a generator seeded by the run's seed, the rank and the batch's index in the fit
        (restored on resume), so the draws repeat with the seed and change every batch and epoch."""
        trainer = self.trainer
        if trainer is None or not trainer.training or not self.augment.active:
            return batch
        progress = trainer.fit_loop.epoch_loop.batch_progress
        step = progress.total.ready  # this batch's index in the fit (the loop sets it after this hook)
        generator = batch_generator(batch[keys.POSITIONS].device, int(os.environ.get("PL_GLOBAL_SEED", 0)),
                                    trainer.global_rank, step)
        batch, counts = augment_batch(batch, self.tasks, self.augment, generator)
        self.augmentation_counts.add(counts)
        if (step + 1) % max(trainer.log_every_n_steps, 1) == 0 or progress.is_last_batch:  # one host copy each
            fractions = self.augmentation_counts.fractions()
            for logger in trainer.loggers:
                logger.log_metrics(fractions, step=trainer.global_step)
        return batch

    def teardown(self, stage: str) -> None:
        """After a fit: what augmentation did (structures, masked labels per task) in the report and the log."""
        if stage == "fit" and self.augment.active and self.augmentation_counts.total is not None:
            self.report["augmentation"] = self.augmentation_counts.as_dict()
            rank_zero_info(self.augmentation_counts.summary(self.augment))
            self.augmentation_counts = AugmentationCounts(list(self.tasks))

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    # -- saved with every checkpoint ------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"tasks": {n: t.to_config() for n, t in self.tasks.items()}, "graph": self.graph_params,
                "normalization": {n: s.to_dict() for n, s in self.normalization.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.normalization = {n: TaskStats(**s) for n, s in state["normalization"].items()}


def _store_report(store: GraphStore) -> Path:
    """A disk store's report: its own file, so that a memory build of the same key never overwrites it."""
    return store.path.with_name(store.path.name + ".json")


def _extended(graphs) -> dict:
    """How many graphs had their radius extended (edge-length scale < 1), with a few of their ids."""
    ids = [g[keys.STRUCTURE_ID] for g in graphs if float(g[keys.EDGE_LENGTH_SCALE]) < 1.0]
    return {"count": len(ids), "examples": ids[:3]}


def _check_options(**options) -> None:
    """One-line ConfigErrors naming the data option, instead of a traceback deep in a DataLoader or neighbour list."""
    rules = {"cutoff": (lambda v: v > 0, "must be > 0 Å"),
             "batch_size": (lambda v: isinstance(v, int) and v >= 1, "must be an integer >= 1"),
             "eval_batch_size": (lambda v: v is None or (isinstance(v, int) and v >= 1), "must be null or >= 1"),
             "num_workers": (lambda v: isinstance(v, int) and v >= 0, "must be an integer >= 0"),
             "max_neighbors": (lambda v: v is None or (isinstance(v, int) and v >= 1), "must be null or >= 1"),
             "min_neighbors": (lambda v: isinstance(v, int) and v >= 0, "must be an integer >= 0"),
             "merge_cell_tol": (lambda v: v >= 0, "must be >= 0 Å")}
    for name, value in options.items():
        valid, rule = rules[name]
        try:
            ok = valid(value)
        except TypeError:
            ok = False
        if not ok:
            raise ConfigError(f"data.{name} {rule}, got {value!r}")
