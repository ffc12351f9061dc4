#!/bin/bash
# The project's GPU checks as one prepared script (issues 27 and 29), for a session lent a GPU machine (the device
# tool: a bare image with CUDA PyTorch, Lightning, e3nn and torch-geometric, nothing fetched there).
#
#   here:  bash benchmarks/gpu_session.sh prepare
#          wheels (Python 3.12, x86-64, no dependencies) of the packages that image lacks, at this venv's versions,
#          into .whl/; the matbench_phonons file into .gpu_data/matbench/ (both ignored by git: carried, not committed)
#   there: device.run(command="bash benchmarks/gpu_session.sh run $OUT", carry=[".whl", ".gpu_data"], timeout_s=600)
#          writes to OUT: card.txt (nvidia-smi, torch's device), commit.txt, test_cuda.txt (tests/test_cuda.py),
#          gpu_32.md and gpu_bf16.md (benchmarks/gpu.py --foundation), finetune_phonons.txt (benchmarks/finetune.py:
#          frozen vs full fine-tuning of SevenNet-0, fold $FOLDS, $EPOCHS epochs), each step's time in steps.txt
#   here:  QUICK=1 bash benchmarks/gpu_session.sh run /tmp/gpu_smoke   (the same steps, small, on this CPU)
#
# Record the card and the commit beside every number it prints (docs/benchmarks.md).
set -uo pipefail
cd "$(dirname "$0")/.."
MODE=${1:?prepare or run}
EPOCHS=${EPOCHS:-40}
FOLDS=${FOLDS:-0}
# the packages equiprop imports that the device image lacks (KINDS.md of the device tool lists what it has)
MISSING="ase bibtexparser braceexpand chgnet docstring-parser gemmi jsonargparse matbench monty orjson palettable
pymatgen pymatgen-core ruamel.yaml sevenn spglib typeshed-client uncertainties vesin vesin-torch optuna alembic
sqlalchemy colorlog mako phonopy symfc"

if [ "$MODE" = prepare ]; then
  grep -qx "/.whl/" .git/info/exclude 2>/dev/null || echo "/.whl/" >> "$(git rev-parse --git-common-dir)/info/exclude"
  grep -qx "/.gpu_data/" .git/info/exclude 2>/dev/null || echo "/.gpu_data/" >> "$(git rev-parse --git-common-dir)/info/exclude"
  mkdir -p .whl .gpu_data/matbench
  for name in $MISSING; do
    version=$(.venv/bin/python -m pip show "$name" 2>/dev/null | awk '/^Version:/ {print $2}')
    [ -n "$version" ] || { echo "not installed here: $name"; exit 1; }
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 --platform any -d .whl "$name==$version" || exit 1
  done
  cp ../shared/data/matbench/matbench_phonons.json.gz .gpu_data/matbench/
  du -sh .whl .gpu_data
  exit 0
fi

OUT=${2:?output folder}
mkdir -p "$OUT"
if [ -d .whl ] && [ -z "${QUICK:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 EQUIPROP_CACHE=${EQUIPROP_CACHE:-$(mktemp -d)}
PY=${PY:-python3}
DATA=.gpu_data
[ -d "$DATA" ] || DATA=../shared/data
step() {  # name, command...: its output to OUT/name, its wall time to OUT/steps.txt
  local name=$1; shift
  local start=$SECONDS
  "$@" > "$OUT/$name" 2>&1
  echo "$name: exit $? in $((SECONDS - start)) s" | tee -a "$OUT/steps.txt"
}
{ nvidia-smi 2>&1 || echo "no nvidia-smi"; $PY -c "import torch; print(torch.__version__, torch.cuda.is_available() and
torch.cuda.get_device_name(0))"; } > "$OUT/card.txt"
git rev-parse HEAD > "$OUT/commit.txt" 2>/dev/null || echo "not a git checkout" > "$OUT/commit.txt"
if [ -n "${QUICK:-}" ]; then
  step test_cuda.txt $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py
  step gpu_32.md $PY benchmarks/gpu.py --quick --precision 32
  step finetune_phonons.txt $PY benchmarks/finetune.py --task matbench_phonons --shared "$DATA" --folds 0 \
    --epochs 1 --modes frozen full_decay
else
  step test_cuda.txt $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py
  step gpu_32.md $PY benchmarks/gpu.py --foundation --precision 32
  step gpu_bf16.md $PY benchmarks/gpu.py --foundation --precision bf16-mixed
  step finetune_phonons.txt $PY benchmarks/finetune.py --task matbench_phonons --shared "$DATA" --folds $FOLDS \
    --epochs "$EPOCHS" --modes frozen full_decay
fi
cat "$OUT/steps.txt"
