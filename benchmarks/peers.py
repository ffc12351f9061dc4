"""Speed against the models people would otherwise use (issue 19): our ``EquivariantEncoder`` beside MACE
(``mace-torch``) and NequIP (``nequip``), on the same bundled graphs, batch size and CPU threads.

Runs in its own virtual environment, outside the repository; torch is installed first and stays the 2.13.0 CPU build
(mace-torch 0.3.16 pins e3nn==0.4.4, while equiprop and nequip need e3nn 0.6: mace-torch goes in with --no-deps, its
other dependencies by hand; its models run and are rotation invariant on e3nn 0.6.0):

    python3 -m venv /work/peers-venv && P=/work/peers-venv/bin/pip
    $P install torch==2.13.0 && $P install -e . nequip==0.19.1
    $P install --no-deps mace-torch==0.3.16 torch-ema prettytable python-hostlist configargparse GitPython gitdb \
        smmap h5py wcwidth
    /work/peers-venv/bin/python benchmarks/peers.py [--structures 256] [--batch-size 16] [--repeats 5] [--threads 1]

Every model gets the same graphs: the first ``--structures`` crystals of the bundled default dataset, edges from
``equiprop.data.graph.record_to_graph`` at the quickstart cutoff (4.5 Å), converted once to MACE's batch dictionary
and to NequIP's ``AtomicDataDict``. Each model is a per-structure energy-like scalar (sum over atoms of a per-atom
readout of the scalar features); a training step is forward + MSE loss against the formation energy + backward +
Adam step; inference is a forward under ``torch.no_grad`` in eval mode. After warm-up, a pass over all batches is
timed ``--repeats`` times and the median pass is reported; all models run in one process, their passes
interleaved (see ``run``).

Configurations (``CONFIGS``). Shared by all: cutoff 4.5 Å, 2 interaction layers, 8 Bessel functions with the p=6
polynomial envelope, radial MLP 8 -> 64 -> 64 -> weights, natural parity (0e, 1o, 2e: NequIP's ``parity=False``),
float32, avg_num_neighbors from these graphs. MACE needs the same multiplicity for every l (its product basis keeps
``num_channels`` copies of each irrep), so the quickstart's 32x0e+16x1o+8x2e is compared with NequIP, and MACE with
our encoder at 32x0e+32x1o+32x2e. Correlation is the body order minus one of each layer's features in both codes:
1 = two-body messages (our default, NequIP), 3 = MACE's usual A x A x A; our product basis then keeps as many channels
per irrep as MACE's (32) in the uniform configurations, 16 (our default) in the quickstart one.

NequIP's and MACE's energy models keep only the 0e part in their last layer (NequIP: the last convolution outputs
scalars only; MACE: the last interaction still forms messages of every l, its product and linear keep 0e). Ours
carries what the model's heads read (``output_irreps: auto``, issue 29): ``*_last0`` is the layout a scalar-only
recipe gets (0e only), the others every hidden irrep (the layout of a recipe whose tensor heads read them all). Other differences that stay: MACE always marks the positions
as requiring grad (its backward also reaches the edge vectors), and MACE and NequIP weight some parts per element
(one-hot over the elements present; more parameters), ours by a learned embedding of Z.

Threads: on a machine shared with other jobs, 2 OpenMP threads on 2 cores wait on each other at every op whenever
another process takes a core (steps 10-50x slower, spread in the thousands of %); --threads 1 gives stable numbers
there. The spread line under the table says whether a run is usable.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

CUTOFF = 4.5
SHARED = {"layers": 2, "num_basis": 8, "radial": [64, 64]}
QUICKSTART, UNIFORM = "32x0e+16x1o+8x2e", "32x0e+32x1o+32x2e"
# name: (code, hidden irreps, max_ell of the edge harmonics, correlation, our product-basis channels, last layer)
# last layer "scalars": the last layer's output is only the 0e part of the hidden irreps, as NequIP's energy model
# always builds it (and MACE's, for its product) and as ours is built for a scalar-only recipe (output_irreps: auto);
# "all": every hidden irrep, the layout of a recipe whose tensor heads read them all.
CONFIGS = {
    "ours_c1": ("ours", QUICKSTART, 2, 1, None, "all"),  # the quickstart's encoder
    "ours_c1_last0": ("ours", QUICKSTART, 2, 1, None, "scalars"),
    "ours_c1_eps": ("ours", QUICKSTART, 2, 1, None, "dielectric"),  # the layout of a recipe with a dielectric head
    "nequip": ("nequip", QUICKSTART, 2, 1, None, "scalars"),
    "ours_c3": ("ours", QUICKSTART, 2, 3, 16, "all"),
    "ours_u32_c1": ("ours", UNIFORM, 2, 1, None, "all"),
    "mace_u32_c1": ("mace", UNIFORM, 2, 1, None, "scalars"),
    "ours_u32_c3": ("ours", UNIFORM, 2, 3, 32, "all"),
    "mace_u32_c3": ("mace", UNIFORM, 2, 3, None, "scalars"),
    "ours_u32_c1_last0": ("ours", UNIFORM, 2, 1, None, "scalars"),
    "nequip_u32": ("nequip", UNIFORM, 2, 1, None, "scalars"),
    # MACE's usual small size (mace_run_train defaults: 128 channels, max_L 1, max_ell 3, correlation 3)
    "ours_128": ("ours", "128x0e+128x1o", 3, 3, 128, "all"),
    "mace_128": ("mace", "128x0e+128x1o", 3, 3, None, "scalars"),
}
DEFAULT = ["ours_c1", "ours_c1_last0", "ours_c1_eps", "nequip", "ours_c3", "ours_u32_c1", "ours_u32_c1_last0", "mace_u32_c1",
           "nequip_u32", "ours_u32_c3", "mace_u32_c3"]


def describe(config: str) -> str:
    code, hidden, max_ell, correlation, channels, last = CONFIGS[config]
    name = {"ours": "EquivariantEncoder", "mace": "MACE", "nequip": "NequIP"}[code]
    product = f" ({channels} product channels)" if code == "ours" and correlation > 1 else ""
    last = {"scalars": ", last layer 0e only", "dielectric": ", last layer 0e+2e"}.get(last, "")
    return f"{name} {hidden}, sh l<={max_ell}, correlation {correlation}{product}{last}"


# ---------------------------------------------------------------------------------------------------------------
# data: our graphs, then each peer's input format
# ---------------------------------------------------------------------------------------------------------------

def our_batches(structures: int, batch_size: int):
    """The first ``structures`` bundled crystals as our batched graphs (``CrystalGraph``), plus the element list."""
    from torch_geometric.data import Batch

    from equiprop.data.graph import record_to_graph
    from equiprop.data.sources import BundledDataset
    from equiprop.data.tasks import resolve_tasks

    tasks = resolve_tasks(["Ef"])
    records = BundledDataset("default").load(tasks).records[:structures]
    graphs = [record_to_graph(r, tasks, CUTOFF) for r in records]
    elements = sorted({int(z) for g in graphs for z in g.atomic_numbers})
    batches = [Batch.from_data_list(graphs[k:k + batch_size]) for k in range(0, len(graphs), batch_size)]
    return batches, elements


def mace_batch(batch, elements: list[int]) -> dict:
    """MACE's batch dictionary. MACE's edge_index is [sender, receiver], messages go to the receiver and its vectors are
    pos[receiver] - pos[sender] + shifts; ours is [centre i, neighbour j] with pos[j] + shift @ cell - pos[i]: sender
    = j, receiver = i, shifts = -(shift @ cell)."""
    import torch

    i, j = batch.edge_index
    cart = torch.einsum("ek,ekl->el", batch.edge_cell_shift, batch.cell[batch.batch[i]])
    index = torch.zeros(max(elements) + 1, dtype=torch.long)
    index[torch.tensor(elements)] = torch.arange(len(elements))
    return {
        "positions": batch.pos.clone(), "edge_index": torch.stack([j, i]), "shifts": -cart,
        "unit_shifts": -batch.edge_cell_shift, "cell": batch.cell.reshape(-1, 3),
        "node_attrs": torch.nn.functional.one_hot(index[batch.atomic_numbers], len(elements)).to(batch.pos.dtype),
        "batch": batch.batch, "ptr": batch.ptr, "head": torch.zeros(batch.num_graphs, dtype=torch.long),
    }


def nequip_batch(batch, elements: list[int]) -> dict:
    """NequIP's ``AtomicDataDict``: same edge convention as ours ([centre, neighbour], shifts in cell units)."""
    import torch

    index = torch.zeros(max(elements) + 1, dtype=torch.long)
    index[torch.tensor(elements)] = torch.arange(len(elements))
    return {
        "pos": batch.pos, "edge_index": batch.edge_index, "edge_cell_shift": batch.edge_cell_shift,
        "cell": batch.cell, "atom_types": index[batch.atomic_numbers], "batch": batch.batch,
        "num_atoms": torch.bincount(batch.batch, minlength=batch.num_graphs),
    }


def avg_neighbours(batches) -> float:
    return sum(b.edge_index.shape[1] for b in batches) / sum(b.num_nodes for b in batches)


# ---------------------------------------------------------------------------------------------------------------
# models: each maps one converted batch to (num_graphs,) energies
# ---------------------------------------------------------------------------------------------------------------

class OurEnergy:
    """EquivariantEncoder -> linear readout of the 0e features per atom -> sum per structure."""

    def __init__(self, config: str, avg: float):
        import torch
        from e3nn import o3
        from torch_geometric.utils import scatter

        from equiprop.nn import EquivariantEncoder

        _, hidden, max_ell, correlation, channels, last = CONFIGS[config]
        self.encoder = EquivariantEncoder(cutoff=CUTOFF, max_ell=max_ell, hidden_irreps=hidden,
                                          num_layers=SHARED["layers"], num_basis=SHARED["num_basis"],
                                          radial_hidden=SHARED["radial"][0], radial_layers=len(SHARED["radial"]),
                                          correlation=correlation, product_channels=channels or 16,
                                          avg_num_neighbors=avg)
        # "scalars": the layout a scalar-only recipe gets (output_irreps: auto, resolved as MultiTaskModel does for
        # heads that read 0e only); "all": every hidden irrep (a recipe whose heads read them all, e.g. elastic)
        # "dielectric": what a dielectric head reads (0e and 2e)
        read = {o3.Irrep("0e")} | ({o3.Irrep("2e")} if last == "dielectric" else set())
        self.encoder.fit_output(read, "hidden" if last == "all" else None)
        scalars = [i for i, (mul, ir) in enumerate(self.encoder.irreps_out) if ir.l == 0 and ir.p == 1]
        slices = self.encoder.irreps_out.slices()
        self.columns = torch.cat([torch.arange(slices[i].start, slices[i].stop) for i in scalars])
        self.readout = torch.nn.Linear(len(self.columns), 1)
        self.module = torch.nn.ModuleDict({"encoder": self.encoder, "readout": self.readout})
        self.scatter = scatter

    def convert(self, batch, elements):
        return batch

    def energy(self, batch):
        per_atom = self.readout(self.encoder(batch)[:, self.columns]).squeeze(-1)
        return self.scatter(per_atom, batch.batch, dim=0, dim_size=batch.num_graphs, reduce="sum")


class MaceEnergy:
    def __init__(self, config: str, avg: float, elements: list[int]):
        import numpy as np
        import torch
        from e3nn import o3
        from mace.modules import MACE, interaction_classes

        _, hidden, max_ell, correlation, _, _ = CONFIGS[config]
        block = interaction_classes["RealAgnosticResidualInteractionBlock"]  # mace_run_train's default, both layers
        self.module = MACE(r_max=CUTOFF, num_bessel=SHARED["num_basis"], num_polynomial_cutoff=6, max_ell=max_ell,
                           interaction_cls=block, interaction_cls_first=block, num_interactions=SHARED["layers"],
                           num_elements=len(elements), hidden_irreps=o3.Irreps(hidden), MLP_irreps=o3.Irreps("16x0e"),
                           atomic_energies=np.zeros(len(elements)), avg_num_neighbors=avg, atomic_numbers=elements,
                           correlation=correlation, gate=torch.nn.functional.silu, radial_MLP=SHARED["radial"])

    def convert(self, batch, elements):
        return mace_batch(batch, elements)

    def energy(self, data):
        return self.module(data, training=self.module.training, compute_force=False)["energy"]


class NequipEnergy:
    def __init__(self, config: str, avg: float, elements: list[int], seed: int):
        import warnings

        import torch
        from ase.data import chemical_symbols
        from e3nn import o3
        from nequip.model import NequIPGNNModel
        from nequip.utils.global_state import set_global_state

        set_global_state()  # nequip's required set-up; it makes float64 the default dtype: the graphs stay float32
        torch.set_default_dtype(torch.float32)
        _, hidden, max_ell, _, _, _ = CONFIGS[config]
        hidden = o3.Irreps(hidden)

        with warnings.catch_warnings():  # per-type energy scales/shifts: not set (no isolated-atom energies here)
            warnings.simplefilter("ignore")
            self.module = NequIPGNNModel(
                seed=seed, model_dtype="float32", type_names=[chemical_symbols[z] for z in elements], r_max=CUTOFF,
                num_layers=SHARED["layers"], l_max=max_ell, parity=False, num_features=[mul for mul, _ in hidden],
                radial_mlp_depth=len(SHARED["radial"]), radial_mlp_width=SHARED["radial"][0],
                num_bessels=SHARED["num_basis"], avg_num_neighbors=avg,
                do_derivatives=False)

    def convert(self, batch, elements):
        return nequip_batch(batch, elements)

    def energy(self, data):
        return self.module(dict(data))["total_energy"].squeeze(-1)


def build(config: str, avg: float, elements: list[int], seed: int):
    code = CONFIGS[config][0]
    if code == "ours":
        return OurEnergy(config, avg)
    if code == "mace":
        return MaceEnergy(config, avg, elements)
    return NequipEnergy(config, avg, elements, seed)


# ---------------------------------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------------------------------

class Timed:
    """One model on the converted batches: its training step, inference pass and timings."""

    def __init__(self, config: str, batches, elements: list[int], avg: float, seed: int):
        import torch

        torch.manual_seed(seed)
        self.config, self.model = config, build(config, avg, elements, seed)
        self.inputs = [self.model.convert(b, elements) for b in batches]
        self.targets = [b["y_Ef"].reshape(-1) * b["mask_Ef"].reshape(-1) for b in batches]  # Ef; 0 where absent
        self.optimizer = torch.optim.Adam([p for p in self.model.module.parameters() if p.requires_grad], lr=1e-3)
        self.params = sum(p.numel() for p in self.model.module.parameters())
        self.train_times, self.infer_times = [], []

    def train_step(self, data, target):
        import torch

        self.optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(self.model.energy(data), target)
        loss.backward()
        self.optimizer.step()

    def train_pass(self, limit: int | None = None, timed: bool = True):
        self.model.module.train()
        start = time.perf_counter()
        for data, target in list(zip(self.inputs, self.targets))[:limit]:
            self.train_step(data, target)
        if timed:
            self.train_times.append(time.perf_counter() - start)

    def infer_pass(self, limit: int | None = None, timed: bool = True):
        import torch

        self.model.module.eval()
        start = time.perf_counter()
        with torch.no_grad():
            for data in self.inputs[:limit]:
                self.model.energy(data)
        if timed:
            self.infer_times.append(time.perf_counter() - start)

    def row(self, structures: int) -> dict:
        return {"config": self.config, "params": self.params,
                "train_step_ms": 1000 * statistics.median(self.train_times) / len(self.inputs),
                "train_spread": (max(self.train_times) - min(self.train_times)) / statistics.median(self.train_times),
                "infer_per_s": structures / statistics.median(self.infer_times)}

    def profile(self, rows: int, train: bool = True) -> str:
        """Top ops (by self CPU time) of one training (or inference) pass."""
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            self.train_pass(timed=False) if train else self.infer_pass(timed=False)
        return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def run(args) -> tuple[list[dict], dict]:
    """All models in one process on the same batches, their timed passes interleaved (model after model, repeat after
    repeat) so that load from other jobs on a shared machine falls on every model alike."""
    import torch

    torch.set_num_threads(args.threads)
    batches, elements = our_batches(args.structures, args.batch_size)
    avg = avg_neighbours(batches)
    models = [Timed(config, batches, elements, avg, args.seed) for config in args.configs]
    for m in models:  # warm-up: e3nn code generation, allocator, first-call dispatch
        m.train_pass(limit=args.warmup, timed=False)
        m.infer_pass(limit=args.warmup, timed=False)
    for _ in range(args.repeats):
        for m in models:
            m.train_pass()
    for _ in range(args.repeats):
        for m in models:
            m.infer_pass()
    info = {"atoms": sum(b.num_nodes for b in batches), "edges": sum(b.edge_index.shape[1] for b in batches),
            "elements": len(elements), "avg_neighbours": avg, "batches": len(batches)}
    for m in models[:len(models) if args.profile else 0]:
        print(f"\n### {m.config}: top ops of one training pass\n{m.profile(args.profile)}", file=sys.stderr)
    return [m.row(args.structures) for m in models], info


def versions() -> dict:
    from importlib.metadata import version

    out = {}
    for name in ("torch", "e3nn", "mace-torch", "nequip", "equiprop"):
        try:
            out[name] = version(name)
        except Exception:  # noqa: BLE001 - absent package: reported as such
            out[name] = "absent"
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--structures", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5, help="timed passes over all batches (median is kept)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (code generation, allocator)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--configs", nargs="+", default=DEFAULT, choices=list(CONFIGS))
    parser.add_argument("--profile", type=int, default=0, help="print the top N ops of one training pass (stderr)")
    args = parser.parse_args()
    rows, info = run(args)
    here = os.path.dirname(os.path.abspath(__file__))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=here).stdout
    print(f"command: python benchmarks/peers.py {' '.join(sys.argv[1:])}")
    print(f"equiprop {commit.strip()}; " + ", ".join(f"{k} {v}" for k, v in versions().items() if k != "equiprop")
          + f"; seed {args.seed}; torch.set_num_threads({args.threads}); float32")
    print(f"data: first {args.structures} bundled default crystals, cutoff {CUTOFF} Å, {info['atoms']} atoms, "
          f"{info['edges']} edges ({info['avg_neighbours']:.1f} per atom), {info['elements']} elements; "
          f"{info['batches']} batches of {args.batch_size}; median of {args.repeats} interleaved passes after "
          f"{args.warmup} warm-up steps\n")
    print(f"| model | config | parameters | train step ms (batch {args.batch_size}) | inference structures/s |")
    print("|---|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['config']} | {describe(r['config'])} | {r['params']:,} | {r['train_step_ms']:.1f} | "
              f"{r['infer_per_s']:.0f} |")
    print(f"\nspread of the training passes (max - min) / median: "
          + ", ".join(f"{r['config']} {r['train_spread']:.0%}" for r in rows))


if __name__ == "__main__":
    main()
