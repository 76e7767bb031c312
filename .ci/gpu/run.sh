#!/usr/bin/env bash
# The one command for a lent CUDA machine (issue 20): the GPU benchmark of every model preset in bf16.
#
#   OUT=/some/dir bash .ci/gpu/run.sh [extra args for python -m illada.benchmarks.gpu, e.g. --quick]
#
# The device machine reaches no network, so nothing is downloaded:
# 1. python: the image's python3 (its CUDA torch sees the GPU); the project runs from this checkout through
#    PYTHONPATH (`pip install -e .` would need build tools and the sweep dependencies from an index it cannot
#    reach; the benchmark needs only torch, safetensors, psutil and numpy, which the image has);
# 2. flash-attn: used if it already imports; else each flash_attn-*.whl carried in .whl/ is installed
#    (--no-index) into /tmp/site and kept if it imports; every attempt goes to $OUT/flash_attn_install.txt,
#    which the report quotes. None fits: the benchmark goes on with sdpa and eager;
# 3. the CUDA tests (-m gpu), then the benchmark: report $OUT/gpu_cuda.md (rewritten after every row, so a
#    timeout still leaves a table), logs $OUT/gpu_tests.log and $OUT/gpu_run.log.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-bench_out/gpu}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
log="$OUT/flash_attn_install.txt"
: >"$log"
note() { echo "$*" | tee -a "$log"; }

note "python: $($PY -c 'import sys, torch
print(sys.executable, "torch", torch.__version__, "CUDA", torch.version.cuda, "GPU", torch.cuda.is_available())' \
  2>&1 | tail -1)"
note "nvidia-smi: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1)"
missing=$($PY -c 'import importlib.util as u
print(*[m for m in ("torch", "safetensors", "psutil", "numpy") if u.find_spec(m) is None])')
if [ -n "$missing" ]; then
  note "error: $PY lacks $missing (carry them as wheels in .whl/)"
  exit 1
fi

if probe=$($PY -c 'import flash_attn; print(flash_attn.__version__)' 2>&1); then
  note "flash-attn: already importable ($probe)"
else
  note "flash-attn: not preinstalled ($(echo "$probe" | tail -1))"
  note "flash-attn: PyPI ships only its source (a build takes far longer than a call); prebuilt wheels are on GitHub"
  shopt -s nullglob
  wheels=(.whl/flash_attn-*.whl)
  [ ${#wheels[@]} -gt 0 ] || note "flash-attn: no flash_attn-*.whl carried in .whl/; going on with sdpa and eager"
  for wheel in "${wheels[@]}"; do
    rm -rf /tmp/site
    if $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$wheel" \
        >>"$log" 2>&1 && PYTHONPATH="/tmp/site:$PYTHONPATH" $PY -c 'import flash_attn' >>"$log" 2>&1; then
      export PYTHONPATH="/tmp/site:$PYTHONPATH"
      note "flash-attn: $wheel installed and imports"
      break
    fi
    note "flash-attn: $wheel does not fit this torch/CUDA (see the lines above)"
  done
fi

timeout 120 $PY -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu_bench.py tests/test_graphs.py tests/test_model.py 2>&1 \
  | tee "$OUT/gpu_tests.log"
$PY -m illada.benchmarks.gpu --out "$OUT/gpu_cuda.md" --install-log "$log" "$@" 2>&1 | tee "$OUT/gpu_run.log"
