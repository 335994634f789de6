#!/usr/bin/env bash
# The GPU check (run it where an accelerator is lent): the tests marked `gpu` and the CUDA benchmarks, one table.
#   bash benchmarks/gpu_check.sh            # from the repository root, after `make venv` (or with .venv present)
# Prints: the tests marked gpu (CUDA vs CPU equality of deletion/insertion and Grad-CAM, the CNN-LSTM cuDNN path,
# one actor per GPU on its assigned device), deletion/insertion against the forward-only bound, and the explain
# flow on the default image data with GPU actors. Record the output in docs/benchmarks.md.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-/tmp}
$PY - <<'PY'
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, devices {torch.cuda.device_count()}:",
      [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])
PY
$PY -m pytest -q -m gpu tests/integration/test_gpu.py -p no:cacheprovider 2>&1 | tail -5 | tee "$OUT/gpu_tests.txt"
tests=$(tail -1 "$OUT/gpu_tests.txt")
$PY benchmarks/gpu_bound.py --device cuda --models smallcnn,resnet50,r3d_18 --batch 32 | tee "$OUT/gpu_bound.txt"
$PY benchmarks/scaling.py --split val --shard-size 32 --variants local,default | tee "$OUT/gpu_flow.txt"
echo
echo "| check | result |"
echo "|---|---|"
echo "| tests marked gpu | ${tests} |"
grep '^| [a-z]' "$OUT/gpu_bound.txt" | grep -v '^| model' | awk -F'|' '{printf "| deletion/insertion %s (batch%s) | %s samples/s = %s of the forward-only bound |\n", $2, $3, $6, $7}'
grep -E '^(local|default) ' "$OUT/gpu_flow.txt" | sed -E 's/^([a-z]+) +(.*)$/| explain flow, \1 | \2 |/'
