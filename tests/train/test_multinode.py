"""Multi-node DDP as far as one machine allows (``recipes/multinode.yaml``): two "nodes" of one process each,
launched by two ``torchrun --nnodes=2`` agents as a cluster's nodes would launch them, on one graph store in a shared
folder. Global rank 0 alone builds the store (``data.shared_cache``), both ranks train on it through DataLoader
workers, rank 0 writes the run. It replaced the DDP-over-a-disk-store test of ``tests/train/test_cli_runs.py``
(two processes, DataLoader workers, graphs on disk), which it covers."""

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

pytestmark = pytest.mark.integration  # two torchrun agents, each starting equiprop fit

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
RECIPE = {
    "run_name": "two_nodes", "seed_everything": 0,
    "trainer": {"max_epochs": 1, "accelerator": "cpu", "log_every_n_steps": 1},
    "model": {"encoder": {"class_path": "equiprop.nn.EquivariantEncoder",
                          "init_args": {"max_ell": 1, "multiplicities": [8, 4], "num_layers": 1}}},
    "data": {"sources": [{"class_path": "equiprop.data.sources.BundledDataset", "init_args": {"dataset": "tiny"}}],
             "tasks": ["Ef", "Eg"], "cutoff": 4.5, "batch_size": 8},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_train_on_one_store_built_once(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    shared = tmp_path / "shared_cache"
    port = free_port()
    agents = [subprocess.Popen(
        [str(BIN / "torchrun"), "--nnodes=2", "--nproc_per_node=1", f"--node_rank={rank}",
         "--master_addr=127.0.0.1", f"--master_port={port}", "--no-python", str(BIN / "equiprop"), "fit",
         "-c", str(recipe), "-c", str(REPO / "recipes" / "multinode.yaml"), "--trainer.num_nodes=2",
         "--trainer.devices=1", f"--data.cache_dir={shared}", "--data.num_workers=1"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    outputs = [agent.communicate(timeout=400) for agent in agents]
    assert [a.returncode for a in agents] == [0, 0], [err[-3000:] for _, err in outputs]
    logs = [out + err for out, err in outputs]
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in logs[0] and "GLOBAL_RANK: 1, MEMBER: 2/2" in logs[1]
    assert sum(log.count("val metrics (physical units)") for log in logs) == 1  # rank 0 prints, once
    # the build's progress bar (printed by any rank that builds): global rank 0 only
    assert "graphs: 100%" in logs[0] and "graphs:" not in logs[1]
    assert len(list(shared.glob("*.sqlite"))) == 1 and not list(shared.glob("*.pt"))  # one store, on disk
    checkpoint = torch.load(tmp_path / "runs" / "two_nodes" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] > 0
