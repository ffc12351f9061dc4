"""Train/val/test splits over the dataset's structures: seeded random, grouped by chemical system (no system in two
splits), MatBench official folds, JARVIS-leaderboard official splits, and explicit id lists.

Every split is a callable ``split(ids, groups) -> {"train": idx, "val": idx, "test": idx}`` (int index arrays).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from equiprop.data.errors import ConfigError

SPLIT_NAMES = ("train", "val", "test")


class Split:
    """Base of all splits: ``split(ids, groups)`` returns {"train", "val", "test"} -> int index arrays."""

    def __call__(self, ids: list[str], groups: list[str]) -> dict[str, np.ndarray]:  # pragma: no cover - interface
        raise NotImplementedError


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ConfigError(f"split fractions must be in [0, 1) and sum below 1: val={val_fraction}, test={test_fraction}")


class RandomSplit(Split):
    """Seeded random split of structures."""

    def __init__(self, val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0):
        _check_fractions(val_fraction, test_fraction)
        self.val_fraction, self.test_fraction, self.seed = val_fraction, test_fraction, seed

    def __call__(self, ids: list[str], groups: list[str]) -> dict[str, np.ndarray]:
        order = np.random.default_rng(self.seed).permutation(len(ids))
        n_val, n_test = round(self.val_fraction * len(ids)), round(self.test_fraction * len(ids))
        return {"train": np.sort(order[n_val + n_test:]), "val": np.sort(order[:n_val]),
                "test": np.sort(order[n_val:n_val + n_test])}


class GroupedSplit(RandomSplit):
    """Seeded split of whole groups (chemical systems such as "O-Si"): no group appears in two splits.

    Groups are shuffled and assigned to val, then test, until each holds its fraction of structures.
    """

    def __call__(self, ids: list[str], groups: list[str]) -> dict[str, np.ndarray]:
        unique, inverse = np.unique(np.asarray(groups), return_inverse=True)
        sizes = np.bincount(inverse)
        order = np.random.default_rng(self.seed).permutation(len(unique))
        assignment = np.zeros(len(unique), dtype=int)  # 0 train, 1 val, 2 test
        targets = [self.val_fraction * len(ids), self.test_fraction * len(ids)]
        filled, part = 0.0, 0
        for g in order:
            while part < 2 and filled >= targets[part]:
                part, filled = part + 1, 0.0
            if part == 2:
                break
            assignment[g], filled = part + 1, filled + sizes[g]
        per_structure = assignment[inverse]
        return {name: np.flatnonzero(per_structure == k) for k, name in enumerate(SPLIT_NAMES)}


class IdListSplit(Split):
    """Explicit id lists: each argument is a list of ids or a path to a text file with one id per line.

    Ids not in the dataset are an error (they usually mean the wrong file) unless ``allow_missing``, in which case
    they are counted in ``self.missing``; structures in no list are unused.
    """

    def __init__(self, train: list[str] | str, val: list[str] | str | None = None, test: list[str] | str | None = None,
                 allow_missing: bool = False):
        self.lists = {"train": train, "val": val or [], "test": test or []}
        self.allow_missing = allow_missing
        self.missing: dict[str, int] = {}

    def _ids(self, value) -> list[str]:
        if isinstance(value, str):
            path = Path(value)
            if not path.exists():
                raise ConfigError(f"id list file not found: {path}")
            return [line.strip() for line in path.read_text().splitlines() if line.strip()]
        return list(value)

    def __call__(self, ids: list[str], groups: list[str]) -> dict[str, np.ndarray]:
        position = {id_: i for i, id_ in enumerate(ids)}
        out = {}
        for name, value in self.lists.items():
            wanted = self._ids(value)
            unknown = [i for i in wanted if i not in position]
            self.missing[name] = len(unknown)
            if unknown and not self.allow_missing:
                raise ConfigError(f"{name} split: {len(unknown)} ids not in the dataset, e.g. {unknown[:3]}")
            out[name] = np.array(sorted(position[i] for i in wanted if i in position), dtype=int)
        for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
            overlap = np.intersect1d(out[a], out[b])
            if len(overlap):
                raise ConfigError(f"{len(overlap)} structures are in both {a} and {b}, e.g. {ids[overlap[0]]}")
        return out


class MatbenchFoldSplit(Split):
    """Official MatBench v0.1 fold: test = the fold's test ids; val carved (seeded) out of its training ids.

    ``restrict_to_present`` gives the MatBench-subset protocol: the fold restricted to the ids in the dataset.
    """

    def __init__(self, task: str, fold: int = 0, val_fraction: float = 0.1, seed: int = 0,
                 restrict_to_present: bool = False):
        _check_fractions(val_fraction, 0.0)
        self.task, self.fold, self.val_fraction, self.seed = task, fold, val_fraction, seed
        self.restrict_to_present = restrict_to_present

    def __call__(self, ids: list[str], groups: list[str]) -> dict[str, np.ndarray]:
        from equiprop.data.sources.matbench import matbench_folds

        folds = matbench_folds(self.task)
        if self.fold not in folds:
            raise ConfigError(f"{self.task} has folds {sorted(folds)}, not {self.fold}")
        train_ids, test_ids = folds[self.fold]
        if self.restrict_to_present:
            present = set(ids)
            train_ids, test_ids = [i for i in train_ids if i in present], [i for i in test_ids if i in present]
        train_ids = list(np.random.default_rng(self.seed).permutation(train_ids))
        n_val = round(self.val_fraction * len(train_ids))
        return IdListSplit(train=train_ids[n_val:], val=train_ids[:n_val], test=list(test_ids))(ids, groups)


class JarvisLeaderboardSplit(Split):
    """Official JARVIS-leaderboard split from a benchmark zip (e.g. ``dft_3d_formation_energy_peratom.json.zip``)."""

    def __init__(self, path: str):
        self.path = path

    def __call__(self, ids: list[str], groups: list[str]) -> dict[str, np.ndarray]:
        from equiprop.data.sources.jarvis import jarvis_leaderboard_split

        split = jarvis_leaderboard_split(self.path)
        return IdListSplit(train=split["train"], val=split["val"], test=split["test"])(ids, groups)


class SubsampledSplit(Split):
    """A split whose training part is a seeded random subset of ``n_train`` structures (val and test unchanged):
    the same held-out structures for every training-set size, for learning curves."""

    def __init__(self, base: Split, n_train: int | None = None, seed: int = 0):
        self.base, self.n_train, self.seed = base, n_train, seed

    def __call__(self, ids: list[str], groups: list[str]) -> dict[str, np.ndarray]:
        split = self.base(ids, groups)
        if self.n_train is not None:
            if self.n_train > len(split["train"]):
                raise ConfigError(f"n_train={self.n_train} but the training split has {len(split['train'])}")
            rng = np.random.default_rng(self.seed)
            split["train"] = np.sort(rng.choice(split["train"], size=self.n_train, replace=False))
        return split
