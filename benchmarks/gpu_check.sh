#!/usr/bin/env bash
# The device check, run once on a lent GPU machine (see README "Benchmarks"):
# the real ViT-B/16 extraction path and the SAE step at full size, with their baselines.
# Usage there: bash benchmarks/gpu_check.sh   (wheels for open_clip, transformers in .whl/,
# results in $OUT); CHECKS="captioning" runs only the named checks (sae features ovs captioning).
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
DEVICE=${DEVICE:-cuda}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc; python3 -c "import torch; print(torch.__version__)"; } 2>&1 | tee "$OUT/machine.txt"
CHECKS=${CHECKS:-sae features ovs captioning}
run() { [[ " $CHECKS " == *" $1 "* ]]; }
run sae && timeout 170 python3 benchmarks/sae.py --device "$DEVICE" --batch 4096 --steps 20 --repeats 3 2>&1 | tee "$OUT/sae_4096.txt"
run sae && timeout 170 python3 benchmarks/sae.py --device "$DEVICE" --batch 16384 --steps 10 --repeats 3 2>&1 | tee "$OUT/sae_16384.txt"
run features && timeout 200 python3 benchmarks/features.py --device "$DEVICE" --images ${IMAGES:-512} --batch-size ${BATCH:-128} --decode-threads ${THREADS:-14} --repeats 2 2>&1 | tee "$OUT/features.txt"
run ovs && timeout 200 python3 benchmarks/ovs.py --device "$DEVICE" --images 32 2>&1 | tee "$OUT/ovs.txt"
run captioning && timeout 200 python3 benchmarks/captioning.py --device "$DEVICE" --images 64 --tokens 20 --repeats 3 2>&1 | tee "$OUT/captioning.txt"
