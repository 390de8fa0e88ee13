#!/bin/bash
# One ablation run of the realistic benchmark (train + infer with extra train
# options, then |Spearman| of latent PC1 and kNN error against the truth).
# Usage (from the repository root, sets made by run.py):
#   R=benchmarks/work/realistic_smooth bash benchmarks/realistic/ablate.sh NAME SET REF [train options...]
#   e.g. ... ablate.sh n800 adk_three_state_b64_snr0.1_exact reference_closed.pdb --n-atoms 800
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
name=$1; set=$2; ref=$3; shift 3
R=${R:-$root/benchmarks/work/realistic_smooth}
out=${OUT:-$root/benchmarks/work/ablation}/$name; mkdir -p "$out"
PY=${PY:-$root/.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
# OVERRIDES='{"gmm_box": 1.0}': settings without an option (gap_experiments/train_with.py)
if [ -n "${OVERRIDES:-}" ]; then TRAIN=("$PY" "$here/gap_experiments/train_with.py" "$OVERRIDES");
else TRAIN=("$PY" -m continuousflex_geodl); fi
"${TRAIN[@]}" train --particles "$R/$set/particles.star" --reference "$R/$set/$ref" \
    --out "$out/model" --threads "${THREADS:-2}" "$@" > "$out/train.log" 2>&1
"$PY" -m continuousflex_geodl infer --model "$out/model" --particles "$R/$set/particles.star" \
    --out "$out/z.npy" --threads "${THREADS:-2}" > "$out/infer.log" 2>&1
"$PY" "$here/score_latents.py" "$out/z.npy" "$R/$set/ground_truth.npz" | tee "$out/score.txt"
