#!/usr/bin/env bash
# GPU tables of the side-by-side benchmarks (issues 3-6 and the gradient family) on a lent NVIDIA H200.
#
# Before the device call, here in the repository root (network needed; .whl/ is git-ignored):
#     bash benchmarks/device_wheels.txt        # downloads/builds the peers' wheels into .whl/ (about 1.7 MB)
# Then the device tool's run, with carry [".whl"] and timeout_s 600:
#     bash benchmarks/device_run.sh
# Each step's output goes to $OUT/<step>.txt and everything to $OUT/all.txt (6 files come back).
#
# The machine's python3 (3.12) has torch (CUDA), torchvision, jax (CUDA), flax and the other needs; the peers come
# from .whl/ (installed into /tmp/site with --no-deps) and jaxplain from this checkout via PYTHONPATH.
#
# Time: the steps share one deadline (BENCH_DEADLINE_S, default 470 s after the wheels are in); each runs under
# `timeout` with its own limit or what is left, whichever is less, so the script ends within about 8 minutes. Rows
# print as they are measured, so a step cut short still leaves its finished rows. Expected on an H200 (estimates,
# not yet seen there; mostly imports, JAX compilation and the peers' batch-1 loops): cam ~50 s, lrp ~2 x 70 s,
# perturbation ~115 s, prototype ~85 s, and the gradient step whatever is left (~60-120 s), its most telling rows
# first. With the wheels' install and the GPU check about 8 minutes; the device call's timeout_s 600 leaves room.
# Budgets: 2-3 timed rounds per row (--reps) and --budget-s caps on the timed rounds; CaBRNet is timed on 2 of the
# 2000 prototypes and its rate scaled by 2/2000 (its time is linear in the prototypes, one call each).
#
# Peak memory on the GPU: torch's CUDA allocator peak around each peer's warm-up; for jaxplain JAX's
# peak_bytes_in_use, which cannot be reset, so rows after the first in one process show the process's peak so far.

set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/bench_out}
mkdir -p "$OUT"
LOG="$OUT/all.txt"
for name in all cam lrp perturbation prototype gradient; do : >"$OUT/$name.txt"; done
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        2>&1 | tee -a "$LOG" || exit 1
    export PYTHONPATH=/tmp/site:$PWD
fi

DEADLINE_S=$((SECONDS + ${BENCH_DEADLINE_S:-470}))

# step NAME LIMIT_S COMMAND...: run COMMAND under timeout, its output appended to $OUT/NAME.txt and to all.txt.
step() {
    local name=$1 limit=$2 left=$((DEADLINE_S - SECONDS))
    shift 2
    ((left < limit)) && limit=$left
    if ((limit < 20)); then
        echo "== $name: skipped, ${left} s left of the deadline" | tee -a "$OUT/$name.txt" "$LOG"
        return
    fi
    echo "== $name (limit ${limit} s): $*" | tee -a "$OUT/$name.txt" "$LOG"
    local start=$SECONDS
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$OUT/$name.txt" "$LOG"
    echo "== $name: exit ${PIPESTATUS[0]} after $((SECONDS - start)) s" | tee -a "$OUT/$name.txt" "$LOG"
}

{
    nvidia-smi -L
    python3 -c "import jax, torch; print('torch', torch.__version__, torch.cuda.get_device_name(0), jax.devices())"
} 2>&1 | tee -a "$LOG"

# Issue 3: Score-CAM vs torch-cam (one image, 512 forwards each side), Grad-CAM and DeepLift vs Captum (batch 8).
step cam 100 python3 benchmarks/bench_cam.py --models resnet18 --methods gradcam,deeplift,scorecam --batch 8 \
    --scorecam-batch 1 --reps 3 --budget-s 15
# Issue 4: LRP EpsilonPlusFlat vs Zennit, ResNet-18 and VGG16, batch 8 and batch 32.
step lrp 90 python3 benchmarks/bench_lrp.py --models resnet18,vgg16 --batch 8 --reps 3 --budget-s 10
step lrp 90 python3 benchmarks/bench_lrp.py --models resnet18,vgg16 --batch 32 --reps 3 --budget-s 10
# Issue 5: occlusion (3x16x16, stride 8: 729 windows, Captum one per forward) and LIME (1000 samples) vs the lime
# package, one image, ResNet-18 and ResNet-50; jaxplain evaluates 128 perturbations per forward on the GPU.
step perturbation 140 python3 benchmarks/bench_perturbation.py --models resnet18,resnet50 --methods occlusion,lime \
    --chunk 128 --reps 2 --budget-s 15
# Issue 6: PRP and SmoothGrad (10 draws) over ProtoPNet's CUB configuration (200 classes x 10 prototypes, 128
# channels), ResNet-18 cut at layer2, 64 px (8x8 locations); CaBRNet timed on 2 prototypes, scaled.
step prototype 120 python3 benchmarks/bench_prototype.py --methods prp,smoothgrad --classes 200 --protos 10 \
    --features 128 --peer-protos 2 --reps 2 --budget-s 20
# Gradient family vs Captum at batch 32, one process (per-configuration workers would add an import each), IG-50 and
# SmoothGrad-50 first (the many-pass methods), ResNet-18 before ResNet-50: the deadline cuts the rest. torch's cache
# and JAX's pool share the GPU, so Captum is capped at 60 GB (estimated; larger settings are skipped) and jaxplain's
# batch_size chosen to fit 40 GB.
step gradient 150 python3 benchmarks/bench_gradient.py --models resnet18,resnet50 --batches 32 \
    --methods ig50,sg50,saliency,gbp --reps 3 --budget-s 10 --in-process --max-gb 60 --jax-gb 40
echo "== total $SECONDS s" | tee -a "$LOG"
