#!/bin/bash
# Same outputs before and after a refactor (issue 18): run this once per source tree, then compare the two folders.
#   git worktree add ../before <commit>; bash benchmarks/same_outputs.sh ../before /tmp/same/before
#   bash benchmarks/same_outputs.sh . /tmp/same/after; diff -r /tmp/same/before /tmp/same/after
# Writes: predict output of the shipped models on examples/cifs (v1.json, v2.json, v3.json), a screen's table
# (screen.csv: examples/cifs, Phase 1 the seed-0 quickstart fit below, Phase 2 equiprop-mp-v1), the metrics table of a short
# seed-0 quickstart fit, of its test and its scoreboard rows (fit_table.txt, test_metrics.txt, scoreboard.txt), and one MatBench fold's predictions
# (mb_fold0.json, phdos_peak, 2 epochs). Each tree runs with its own empty cache and from this checkout's recipes/data.
set -euo pipefail
SRC=$(cd "$1" && pwd); OUT=$2; mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.."
export PYTHONPATH=$SRC/src EQUIPROP_CACHE=$(mktemp -d)
PY=.venv/bin/python
RUN=same_outputs_$(basename "$OUT")
$PY -m equiprop.cli predict --model equiprop-mp-v1 --input examples/cifs --output "$OUT/v1.json" > /dev/null
$PY -m equiprop.cli predict --model equiprop-mp-v2 --input examples/cifs --output "$OUT/v2.json" > /dev/null
$PY -m equiprop.cli predict --model equiprop-mp-v3 --input examples/cifs --output "$OUT/v3.json" > /dev/null
$PY -m equiprop.cli fit -c recipes/quickstart.yaml --seed_everything=0 --run_name="$RUN" --overwrite=true \
  --trainer.max_epochs=1 --trainer.limit_train_batches=4 --trainer.limit_val_batches=2 \
  --trainer.enable_progress_bar=false > "$OUT/fit.log" 2>&1
grep -E "^\S+\s+(mae|rmse|component_mae|frobenius_error)" "$OUT/fit.log" > "$OUT/fit_table.txt"
$PY -m equiprop.cli test -c recipes/quickstart.yaml --ckpt_path "runs/$RUN/last.ckpt" --run_name="$RUN" \
  --trainer.enable_progress_bar=false > "$OUT/test.log" 2>&1
grep "test/" "$OUT/test.log" > "$OUT/test_metrics.txt"
$PY -c "
import sys
from equiprop.workflows.scoreboard import format_table, scoreboard_rows
from equiprop.workflows.scoreboard_inputs import load_run, task_results
print(format_table(scoreboard_rows(task_results(load_run(sys.argv[1], 'recipes/quickstart.yaml'), None))))" \
  "runs/$RUN/last.ckpt" > "$OUT/scoreboard.txt" 2> "$OUT/scoreboard.log"
$PY -m equiprop.cli screen --input examples/cifs --phase1 "runs/$RUN/last.ckpt" --phase2 equiprop-mp-v1 \
  --output "$OUT/screen.csv" --workers 0 > "$OUT/screen.log" 2>&1
rm -rf "$OUT/screen.csv.work" "$OUT/screen.summary.json"
rm -rf "runs/$RUN/matbench_phonons"
$PY -m equiprop.cli matbench --task matbench_phonons -c recipes/matbench.yaml \
  --data-path ../shared/data/matbench/matbench_phonons.json.gz --folds 0 --run_name="$RUN" --trainer.max_epochs=2 \
  --trainer.limit_train_batches=4 --trainer.enable_progress_bar=false > "$OUT/matbench.log" 2>&1
$PY -c "import json, sys; d = json.load(open(sys.argv[1])); json.dump({k: d[k] for k in ('predictions', 'mae')}, open(sys.argv[2], 'w'), indent=1, sort_keys=True)" \
  "runs/$RUN/matbench_phonons/fold_0/predictions.json" "$OUT/mb_fold0.json"
rm -f "$OUT"/*.log
