#!/usr/bin/env bash
# The built-in model's recipe at full size on one GPU, in about 12 minutes of wall time:
#   1. render synthetic (W+, HR face) pairs from the prior (`dapfsr synthesize`, batch 256);
#   2. train the encoder from the shipped weights with the image loss on real faces (batch 64)
#      plus the code loss on the synthetic pairs (batch 256), bf16 autocast, cosine schedule;
#   3. write the model with its weights in float16, split into safetensors files of at most
#      16 MiB each (what a lent GPU machine can send back), ready for release_default_model.py.
#
#   bash recipes/gpu_train.sh                       # on a GPU machine, from the repository root
#   SMOKE=1 bash recipes/gpu_train.sh               # the same commands, a few CPU steps (a check)
#
# Settings (environment): DATA (real faces, default ../shared/data/celeba/train), OUT (default
# runs/gpu), PAIRS (default 50000), STEPS (default 3000), BATCH (64), SYNTHETIC_BATCH (256),
# DEGRADATION (recipes/configs/degradation_mixed.json).
# A GPU machine that reaches no network needs the weights cache with it: set DAPFSR_CACHE to a
# copy holding ffhq-mobilestylegan, vgg19-normalised and landmarks/ (about 56 MiB); validation
# LPIPS is off so that lpips-vgg (57 MiB) need not travel.
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${DATA:-../shared/data/celeba/train}
OUT=${OUT:-runs/gpu}
CONFIG=recipes/configs/model_default.json
DEGRADATION=${DEGRADATION:-recipes/configs/degradation_mixed.json}
if [[ "${SMOKE:-0}" == 1 ]]; then
    PAIRS=${PAIRS:-32} STEPS=${STEPS:-2} BATCH=${BATCH:-2} SYNTHETIC_BATCH=${SYNTHETIC_BATCH:-4}
    DEVICE=cpu PRECISION=no MAX_IMAGES=16 VALIDATION=4
else
    PAIRS=${PAIRS:-50000} STEPS=${STEPS:-3000} BATCH=${BATCH:-64} SYNTHETIC_BATCH=${SYNTHETIC_BATCH:-256}
    DEVICE=cuda PRECISION=bf16 MAX_IMAGES=10000 VALIDATION=64
fi
mkdir -p "$OUT"
start=$(date +%s)

dapfsr synthesize --out "$OUT/synthetic" --num-pairs "$PAIRS" --shard-size 5000 --batch-size 256 \
    --device "$DEVICE" --no-progress
echo "synthetic pairs: $(( $(date +%s) - start )) s"

python recipes/train_encoder.py --config "$CONFIG" --init-from default \
    --data "$DATA" --max-images "$MAX_IMAGES" --min-face-size 60 \
    --synthetic-data "$OUT/synthetic" --synthetic-batch-size "$SYNTHETIC_BATCH" --code-weight 0.1 \
    --batch-size "$BATCH" --learning-rate 2e-4 --lr-schedule cosine --lr-warmup-steps 100 --max-steps "$STEPS" \
    --degradation "$DEGRADATION" --flip-probability 0.5 --grey-probability 0.1 \
    --mixed-precision "$PRECISION" --num-workers 4 \
    --validation-size "$VALIDATION" --validation-every 500 --lpips-net none --grid-size 8 \
    --checkpoint-every 1000 --checkpoints-total-limit 1 --log-every 50 \
    --output-dir "$OUT/train" --seed 0 --report-to none
echo "training: $(( $(date +%s) - start )) s"

python - "$OUT/train/model" "$OUT/model" <<'EOF'
import sys
from pathlib import Path

import torch

from facetools_dapfsr import DAPFSR

model = DAPFSR.from_pretrained(sys.argv[1])
out = model.save_pretrained(sys.argv[2], dtype=torch.float16, max_shard_bytes=16 * 2**20)  # what a lent GPU machine sends back
for path in sorted(Path(out).iterdir()):
    print(f"{path.name}: {path.stat().st_size / 2**20:.2f} MiB")
EOF
echo "total: $(( $(date +%s) - start )) s"
