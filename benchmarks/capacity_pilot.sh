#!/usr/bin/env bash
# Issue 12 item 3: what encoder capacity buys on the cheap path. Three encoders (the built-in
# ResNet-18 at width 32, ResNet-34, ResNet-18 at width 48) trained from scratch with the code
# loss alone on the same synthetic (W+, face) pairs, same steps, batch, schedule and seed; each
# validated every 100 steps on 32 CelebA test faces (the decoder's raw output, the paper's clean
# LR). Resumable: rerun the same command after an interruption. Afterwards:
#   python benchmarks/learning_curves.py --run "ResNet-18 w32=runs/capacity/model_default" \
#       --run "ResNet-34 w32=runs/capacity/model_resnet34" --run "ResNet-18 w48=runs/capacity/model_resnet18_wide48" \
#       --out benchmarks/curves_capacity.png
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-runs/capacity}"
steps="${STEPS:-600}"
export OMP_NUM_THREADS="${THREADS:-1}"
dapfsr synthesize --out "$out/pairs" --num-pairs "${PAIRS:-4000}" --seed 0 --no-progress
for config in model_default model_resnet34 model_resnet18_wide48; do
    run="$out/$config"
    if [ -f "$run/model/config.json" ]; then continue; fi  # finished earlier
    resume=()
    if [ -d "$run/checkpoints" ]; then resume=(--resume latest); fi
    python recipes/train_encoder.py --config "recipes/configs/$config.json" \
        --synthetic-data "$out/pairs" --synthetic-batch-size 48 --code-weight 1 \
        --max-steps "$steps" --learning-rate 5e-4 --lr-schedule cosine --lr-warmup-steps 50 --seed 0 \
        --validation-data ../shared/data/celeba/test --validation-size 32 --validation-every 100 --lpips-net vgg \
        --checkpoint-every 100 --log-every 10 --output-dir "$run" --report-to none "${resume[@]}"
done
