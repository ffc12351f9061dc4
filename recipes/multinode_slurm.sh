#!/bin/bash
# equiprop fit on several nodes with SLURM: one task per device, Lightning's SLURM environment sets the ranks.
#   sbatch recipes/multinode_slurm.sh recipes/quickstart.yaml
# EQUIPROP_CACHE and EQUIPROP_RUNS on the shared file system: global rank 0 builds the graph store once
# (recipes/multinode.yaml: data.shared_cache) and rank 0 writes the run folder.
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --cpus-per-task=4
#SBATCH --time=04:00:00
set -euo pipefail
RECIPE=${1:?usage: sbatch recipes/multinode_slurm.sh RECIPE.yaml}
export EQUIPROP_CACHE=${EQUIPROP_CACHE:-$PWD/.equiprop-cache} EQUIPROP_RUNS=${EQUIPROP_RUNS:-$PWD/runs}
srun equiprop fit -c "$RECIPE" -c recipes/multinode.yaml \
  --trainer.num_nodes="$SLURM_JOB_NUM_NODES" --trainer.devices="$SLURM_NTASKS_PER_NODE" \
  --data.num_workers="$((SLURM_CPUS_PER_TASK - 1))"
