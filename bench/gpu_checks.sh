#!/usr/bin/env bash
# The GPU checks, as one short script for a lent GPU box (the figures go to docs/operations.md's capacity plan):
#   1. the trainer's tests with CUDA visible (Dist picks the GPU: bf16 autocast, fused AdamW, pinned batches);
#   2. 4M-21 B training steps, eager and with compiled blocks: step time, tokens/s, MFU, peak memory
#      (and, eager, the host-device syncs of one step: 0 since the slot index);
#   3. every full-size model labeler's own label_batch on the GPU: ms/image and the MFU its counted FLOPs reach,
#      at each fp32 matmul precision (full fp32, TF32 = the default, bf16 inside matmuls), then under bf16 autocast.
# SKIP_TRAIN=1 runs the labelers only.
# Each step has its own time limit, so one that hangs costs only its share.
#
#   bash bench/gpu_checks.sh                                   # on the GPU box, from the repo root
#   DEV=cpu SIZE=tiny BATCH=2 STEPS=1 IMAGES=2 LABELERS="dinov2" bash bench/gpu_checks.sh   # a dry run here
set -u
DEV=${DEV:-cuda}
SIZE=${SIZE:-B}
BATCH=${BATCH:-128}
STEPS=${STEPS:-10}
IMAGES=${IMAGES:-32}
LABELERS=${LABELERS:-depth normals semseg clip dinov2 imagebind t5}
THREADS=${THREADS:-$(nproc)}
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PY:-python3}

step() {  # step SECONDS TITLE CMD...
    local limit=$1 title=$2
    shift 2
    echo "=== $title ($(date -u +%T), limit ${limit}s)"
    local t0=$SECONDS
    timeout "$limit" "$@"
    local rc=$?
    echo "=== rc=$rc in $((SECONDS - t0)) s"
    [ "$rc" = 0 ] || FAILED="$FAILED '$title'"
}
FAILED=

if [ "$DEV" = cuda ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi
$PY -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"
if [ -z "${SKIP_TRAIN:-}" ]; then
    if [ "$DEV" = cuda ]; then
        step 90 "trainer tests, CUDA visible" $PY -m pytest tests/train/test_trainer.py tests/train/test_slot_index.py \
            -q -p no:cacheprovider
    fi
    step 100 "train step $SIZE eager" $PY bench/bench_train_step.py --size "$SIZE" --device "$DEV" \
        --batch "$BATCH" --steps "$STEPS" --threads "$THREADS" --peak-flops 989e12 --count-syncs
    step 170 "train step $SIZE compiled" $PY bench/bench_train_step.py --size "$SIZE" --device "$DEV" \
        --batch "$BATCH" --steps "$STEPS" --threads "$THREADS" --peak-flops 989e12 --compile
fi
if [ "$DEV" = cuda ]; then  # labelers normalise on the device: bit-identical to NumPy there too
    step 30 "normalize on CUDA vs NumPy" $PY -c \
        "from tests.pseudolabel.test_models import test_normalize_is_bit_identical_to_numpy as t; t('cuda'); print('ok')"
fi
for precision in highest high medium; do  # the labelers' matmul_precision setting; 'high' is the default
    # shellcheck disable=SC2086  # LABELERS is a word list
    step 110 "labelers, matmul_precision $precision" $PY bench/bench_capacity.py --parts labelers --only $LABELERS \
        --time "$DEV" --time-batch "$IMAGES" --threads "$THREADS" --matmul-precision "$precision"
done
# shellcheck disable=SC2086
step 110 "labelers, autocast bf16" $PY bench/bench_capacity.py --parts labelers --only $LABELERS \
    --time "$DEV" --time-batch "$IMAGES" --threads "$THREADS" --autocast bf16
if [ -n "$FAILED" ]; then
    echo "failed:$FAILED"
    exit 1
fi
