"""Training and inference speed of the invariant baseline, the equivariant encoder at max_ell 0-3 (and, lean at
max_ell 2, with body order raised by the product basis: ``_c2``, ``_c3`` = correlation 2, 3), and the SevenNet-0
foundation encoder in each transfer mode.

    python benchmarks/speed.py [--batches 12] [--batch-size 32] [--width 64] [--layers 3] [--environment-channels 8]

Same data (bundled default, all tasks, cutoff 5 Å), same batch size, same scalar width and depth for every model;
each configuration runs in its own process so peak memory (max RSS) is its own. Prints a table.

Foundation configurations: ``foundation_uncached`` recomputes the frozen SevenNet-0 features every step (the cost of
featurising new structures), ``foundation_frozen`` reads them from the per-structure cache (filled before timing),
``foundation_last1`` fine-tunes the last layer on cached outputs of the first four, ``foundation_all`` fine-tunes
every weight (``from_scratch`` costs the same).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

CONFIGS = ["invariant", "equivariant_l0", "equivariant_l1", "equivariant_l2", "equivariant_l3", "equivariant_l2_lean",
           "equivariant_l2_lean_c2", "equivariant_l2_lean_c3"]
FOUNDATION = ["foundation_uncached", "foundation_frozen", "foundation_last1", "foundation_all"]


def build(config: str, width: int, layers: int, cutoff: float):
    from equiprop.nn import EquivariantEncoder, InvariantEncoder

    if config.startswith("foundation"):
        from equiprop.nn import FoundationEncoder

        cache_dir = os.path.join(tempfile.mkdtemp(), "features")
        return {"foundation_uncached": lambda: FoundationEncoder(cache_features=False),
                "foundation_frozen": lambda: FoundationEncoder(cache_dir=cache_dir),
                "foundation_last1": lambda: FoundationEncoder(transfer="finetune", trainable_layers=1,
                                                              cache_dir=cache_dir),
                "foundation_all": lambda: FoundationEncoder(transfer="finetune")}[config]()
    if config == "invariant":
        return InvariantEncoder(cutoff=cutoff, num_features=width, num_layers=layers)
    if config.startswith("equivariant_l2_lean"):  # same scalar width, fewer l>0 channels: the quickstart's shape
        correlation = int(config[-1]) if config[-3:-1] == "_c" else 1
        return EquivariantEncoder(cutoff=cutoff, max_ell=2, multiplicities=[width, width // 4, width // 8],
                                  num_layers=layers, correlation=correlation)
    max_ell = int(config[-1])
    multiplicities = [width, width // 2, width // 4, width // 8][: max_ell + 1]
    return EquivariantEncoder(cutoff=cutoff, max_ell=max_ell, multiplicities=multiplicities, num_layers=layers)


def best_of(repeats: int, fn) -> float:
    """Fastest of several timed passes: the machine's background noise only ever adds time."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(config: str, args) -> dict:
    import torch
    from torch_geometric.data import Batch

    from equiprop.data.datamodule import DEFAULT_TASKS, MultiTaskDataModule
    from equiprop.train.module import MultiTaskModel

    torch.manual_seed(0)
    data = MultiTaskDataModule(cutoff=args.cutoff, batch_size=args.batch_size, cache_dir=args.cache)
    data.setup()
    train = data.subsets["train"]
    batches = [Batch.from_data_list([train[i] for i in range(k * args.batch_size, (k + 1) * args.batch_size)])
               for k in range(args.batches + 2)]
    model = MultiTaskModel(build(config, args.width, args.layers, args.cutoff), list(DEFAULT_TASKS),
                           environment_channels=args.environment_channels)
    model.normalizer.set_stats(data.normalization)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)

    def train_step(batch):
        optimizer.zero_grad()
        model.training_step(batch, 0).backward()
        optimizer.step()

    model.log = lambda *a, **k: None  # no trainer attached: logging is a no-op here
    if getattr(model.encoder, "cache_point", 0):  # cached modes: every timed structure was featurised before
        with torch.no_grad():
            for batch in batches:
                model.encoder(batch)
    for batch in batches[:2]:  # warm-up (e3nn code generation, allocator)
        train_step(batch)
    train_time = best_of(args.repeats, lambda: [train_step(b) for b in batches[2:]])
    model.eval()
    with torch.no_grad():
        model(batches[0])
        infer_time = best_of(args.repeats, lambda: [model(b) for b in batches[2:]])
    n = args.batches * args.batch_size
    return {"config": config, "params": sum(p.numel() for p in model.parameters()),
            "irreps": str(model.encoder.irreps_out), "train_per_s": n / train_time, "infer_per_s": n / infer_time,
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per configuration (best is kept)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--cutoff", type=float, default=5.0)
    parser.add_argument("--environment-channels", type=int, default=0,
                        help="neighbour-shell harmonics channels of the tensor readouts (the recipes use 8)")
    parser.add_argument("--configs", nargs="+", default=CONFIGS + FOUNDATION)
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "equiprop_bench_cache"))
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args)))
        return
    import torch

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; bundled default data, cutoff {args.cutoff} Å, batch {args.batch_size}, "
          f"{args.batches} timed batches (best of {args.repeats} passes), width {args.width}, {args.layers} layers, "
          f"tensor readouts with {args.environment_channels} environment channels")
    rows = []
    for config in args.configs:
        cmd = [sys.executable, __file__, "--one", config] + [f"--{k.replace('_', '-')}={v}" for k, v in vars(
            args).items() if k not in ("one", "configs")]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    base = rows[0] if rows[0]["config"] == "invariant" else None
    print(f"{'encoder':<22} {'params':>9} {'train struct/s':>15} {'infer struct/s':>15} {'train slowdown':>15} "
          f"{'peak MiB':>9}  hidden irreps")
    for r in rows:
        ratio = f"{base['train_per_s'] / r['train_per_s']:.2f}x" if base else "-"
        print(f"{r['config']:<22} {r['params']:>9} {r['train_per_s']:>15.1f} {r['infer_per_s']:>15.1f} {ratio:>15} "
              f"{r['peak_mib']:>9.0f}  {r['irreps']}")


if __name__ == "__main__":
    main()
