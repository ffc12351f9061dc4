"""A training step makes a GPU wait for the host once (the label counts, module._step), not once per task: counted
on the CPU by the ops that would sync on a GPU."""

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch_geometric.data import Batch

from equiprop.data import keys

# reading a value (.item(), int(), bool(), `if tensor:`), or an output whose size depends on values
SYNCING = {"_local_scalar_dense", "nonzero", "masked_select", "bincount", "_unique2", "unique_dim", "is_nonzero"}


class SyncingOps(TorchDispatchMode):
    """Names of the syncing ops run inside it; indexing with a bool mask counts (a nonzero inside)."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__.split(".")[0]
        bool_index = name == "index" and any(getattr(i, "dtype", None) == torch.bool for i in args[1])
        if name in SYNCING or bool_index:
            self.seen.append(func.__name__)
        return func(*args, **(kwargs or {}))


def test_training_step_and_backward_read_nothing_back(tiny_data, small_model):
    tiny_data.setup()
    model = small_model(environment_channels=4)
    model.normalizer.set_stats(tiny_data.normalization)
    batch = Batch.from_data_list(list(tiny_data.subsets["train"]))
    assert all(0 < int(batch[keys.mask_key(n)].sum()) < batch.num_graphs for n in ("Ef", "elastic_tensor"))  # masks
    with SyncingOps() as ops:
        model.training_step(batch, 0).backward()
    assert ops.seen == []
