"""What the model derives from data (message normalisation, elements seen) comes from the training split only."""


import torch

from equiprop.data import keys


def _mean_neighbours(graphs) -> float:
    graphs = list(graphs)
    return sum(g.num_edges for g in graphs) / sum(g.num_nodes for g in graphs)


def test_avg_num_neighbors_and_species_seen_come_from_the_training_split(tiny_data, small_model, tmp_path,
                                                                         quiet_trainer):
    model = small_model()
    trainer = quiet_trainer(limit_train_batches=1, limit_val_batches=1, default_root_dir=str(tmp_path))
    trainer.fit(model, datamodule=tiny_data)
    train, everything = _mean_neighbours(tiny_data.subsets["train"]), _mean_neighbours(tiny_data.dataset)
    assert abs(train - everything) > 1e-3  # the split matters on this data, so the test can tell them apart
    assert float(model.encoder.avg_num_neighbors) == torch.tensor(train).float().item()
    train_species = {int(z) for g in tiny_data.subsets["train"] for z in g[keys.ATOMIC_NUMBERS]}
    all_species = {int(z) for g in tiny_data.dataset for z in g[keys.ATOMIC_NUMBERS]}
    assert train_species < all_species
    assert set(torch.nonzero(model.species_seen).flatten().tolist()) == train_species
