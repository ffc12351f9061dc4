"""On a CUDA device: a small model trains (forward and backward, and a Lightning fit) and a Predictor predicts, with
the numbers the CPU gives. Skipped where there is no GPU (as on the CPU-only test machines)."""

import lightning as L
import pytest
import torch
from pymatgen.core import Structure
from torch_geometric.data import Batch

from equiprop import Predictor
from equiprop.data.datamodule import MultiTaskDataModule
from equiprop.data.graph import record_to_graph
from equiprop.data.record import from_pymatgen
from equiprop.data.sources import BundledDataset
from equiprop.data.splits import RandomSplit
from equiprop.nn import EquivariantEncoder
from equiprop.train.module import MultiTaskModel

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")

TASKS = ["Ef", "Eg", "K_VRH", "eps_electronic", "elastic_tensor"]


def _model() -> MultiTaskModel:
    torch.manual_seed(0)
    return MultiTaskModel(EquivariantEncoder(cutoff=4.5, max_ell=2, multiplicities=[16, 8, 4], num_layers=2), TASKS)


def _structures(tiny_entries, n=6) -> list[Structure]:
    return [Structure.from_dict(e["structure"]) for e in tiny_entries[:n]]


def test_forward_and_backward_on_cuda_match_the_cpu(tiny_entries):
    batch = Batch.from_data_list([record_to_graph(from_pymatgen(s, f"s{i}"), {}, 4.5)
                                  for i, s in enumerate(_structures(tiny_entries))])
    results = {}
    for device in ("cpu", "cuda"):
        model = _model().to(device)
        outputs = model(batch.to(device), TASKS)
        sum(out.square().sum() for out in outputs.values()).backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(g.device.type == device and bool(torch.isfinite(g).all()) for g in grads)
        results[device] = ({n: o.detach().cpu() for n, o in outputs.items()}, [g.cpu() for g in grads])
    (cpu_out, cpu_grads), (gpu_out, gpu_grads) = results["cpu"], results["cuda"]
    for name in TASKS:  # TF32 matmuls may be on: agreement to ~1e-3, not to the last bit
        torch.testing.assert_close(gpu_out[name], cpu_out[name], rtol=1e-3, atol=1e-3)
    for gpu, cpu in zip(gpu_grads, cpu_grads):
        torch.testing.assert_close(gpu, cpu, rtol=1e-2, atol=1e-3)


def test_a_fit_on_the_gpu_gives_a_checkpoint_that_predicts_on_cuda_as_on_the_cpu(tiny_entries, tmp_path):
    L.seed_everything(0)
    data = MultiTaskDataModule(sources=[BundledDataset("tiny")], tasks=TASKS, cutoff=4.5,
                               split=RandomSplit(0.2, 0.2, seed=0), batch_size=8, cache_dir=str(tmp_path / "cache"))
    trainer = L.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, accelerator="gpu", devices=1,
                        enable_progress_bar=False, logger=False, enable_checkpointing=False,
                        enable_model_summary=False, default_root_dir=str(tmp_path))
    trainer.fit(_model(), datamodule=data)
    trainer.save_checkpoint(tmp_path / "model.ckpt")

    predictor = Predictor.from_checkpoint(tmp_path / "model.ckpt", allow_unseen_elements=True, warn=False)
    structures = _structures(tiny_entries)
    on_cpu = predictor.predict(structures)
    on_gpu = predictor.to("cuda").predict(structures)
    assert predictor.device.type == "cuda"
    for cpu, gpu in zip(on_cpu, on_gpu):
        assert cpu.keys() == gpu.keys()
        for name in cpu:
            torch.testing.assert_close(torch.as_tensor(gpu[name]), torch.as_tensor(cpu[name]), rtol=1e-3, atol=1e-3)
