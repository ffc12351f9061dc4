import json
import zipfile

import numpy as np
import pytest

from equiprop.data.errors import ConfigError
from equiprop.data.sources.records_json import BundledDataset
from equiprop.data.sources.matbench import matbench_folds
from equiprop.data.splits import GroupedSplit, IdListSplit, JarvisLeaderboardSplit, MatbenchFoldSplit, RandomSplit
from equiprop.data.tasks import resolve_tasks


@pytest.fixture(scope="module")
def bundled_ids_and_systems():
    result = BundledDataset("default").load(resolve_tasks(["Ef", "Eg", "K_VRH", "eps_electronic"]))
    return [r.id for r in result.records], [r.chemical_system for r in result.records]


def _assert_partition(split, n):
    joined = np.concatenate([split["train"], split["val"], split["test"]])
    assert len(joined) == len(set(joined.tolist())) == n


def test_grouped_split_puts_each_chemical_system_in_one_split(bundled_ids_and_systems):
    ids, systems = bundled_ids_and_systems
    split = GroupedSplit(val_fraction=0.1, test_fraction=0.15, seed=1)(ids, systems)
    _assert_partition(split, len(ids))
    owners = {}
    for name, idx in split.items():
        for i in idx:
            assert owners.setdefault(systems[i], name) == name, f"{systems[i]} in {owners[systems[i]]} and {name}"
    assert abs(len(split["val"]) / len(ids) - 0.1) < 0.02 and abs(len(split["test"]) / len(ids) - 0.15) < 0.02
    again = GroupedSplit(val_fraction=0.1, test_fraction=0.15, seed=1)(ids, systems)
    other = GroupedSplit(val_fraction=0.1, test_fraction=0.15, seed=2)(ids, systems)
    assert all(np.array_equal(split[k], again[k]) for k in split)
    assert not np.array_equal(split["test"], other["test"])


def test_random_split_is_a_seeded_partition():
    ids = [f"s{i}" for i in range(1000)]
    split = RandomSplit(0.2, 0.1, seed=0)(ids, ids)
    _assert_partition(split, 1000)
    assert (len(split["train"]), len(split["val"]), len(split["test"])) == (700, 200, 100)
    with pytest.raises(ConfigError):
        RandomSplit(0.6, 0.5)


def test_id_lists_from_files_and_their_errors(tmp_path):
    ids = [f"mp-{i}" for i in range(10)]
    (tmp_path / "test.txt").write_text("mp-3\nmp-7\n")
    split = IdListSplit(train=[f"mp-{i}" for i in (0, 1, 2)], val=["mp-5"], test=str(tmp_path / "test.txt"))(ids, ids)
    assert split["test"].tolist() == [3, 7] and split["val"].tolist() == [5]
    with pytest.raises(ConfigError, match="not in the dataset"):
        IdListSplit(train=["mp-99"])(ids, ids)
    with pytest.raises(ConfigError, match="in both train and test"):
        IdListSplit(train=["mp-1"], test=["mp-1"])(ids, ids)
    with pytest.raises(ConfigError, match="not found"):
        IdListSplit(train=str(tmp_path / "missing.txt"))(ids, ids)


def test_matbench_fold_split_is_the_official_fold():  # the folds ship in the matbench package
    folds = matbench_folds("matbench_phonons")
    ids = sorted(set(folds[0][0]) | set(folds[0][1]))
    split = MatbenchFoldSplit("matbench_phonons", fold=2, val_fraction=0.1)(ids, ids)
    assert sorted(ids[i] for i in split["test"]) == sorted(folds[2][1])
    assert sorted(ids[i] for i in np.concatenate([split["train"], split["val"]])) == sorted(folds[2][0])
    assert len(split["val"]) == round(0.1 * len(folds[2][0]))
    # MatBench-subset protocol: the fold restricted to the ids present
    subset = ids[::3]
    restricted = MatbenchFoldSplit("matbench_phonons", fold=2, restrict_to_present=True)(subset, subset)
    assert sorted(subset[i] for i in restricted["test"]) == sorted(set(folds[2][1]) & set(subset))


def test_jarvis_leaderboard_split_on_the_real_zip(shared_data):
    path = shared_data / "jarvis_leaderboard" / "dft_3d_exfoliation_energy.json.zip"
    with zipfile.ZipFile(path) as z:
        official = json.loads(z.read(z.namelist()[0]))
    ids = sorted(set(official["train"]) | set(official["val"]) | set(official["test"]))
    split = JarvisLeaderboardSplit(str(path))(ids, ids)
    for name in ("train", "val", "test"):
        assert sorted(ids[i] for i in split[name]) == sorted(official[name])


def test_subsampled_split_keeps_the_held_out_sets():
    from equiprop.data.splits import SubsampledSplit

    ids = [f"s{i}" for i in range(200)]
    groups = [f"g{i % 40}" for i in range(200)]
    base = GroupedSplit(0.1, 0.2, seed=0)
    full = base(ids, groups)
    for seed in (0, 1):
        small = SubsampledSplit(base, n_train=30, seed=seed)(ids, groups)
        assert len(small["train"]) == 30 and set(small["train"]) <= set(full["train"])
        assert np.array_equal(small["test"], full["test"]) and np.array_equal(small["val"], full["val"])
    with pytest.raises(ConfigError, match="n_train"):
        SubsampledSplit(base, n_train=10_000)(ids, groups)
