#!/bin/bash
# The pose-free route on a realistic set (issue 12): the star's angles are
# ignored; global pose search against one end-state reference, train, repair
# the poses against the model's per-particle structures, train again, infer;
# pose errors against the truth after each pose step, latents scored.
# Usage (repository root): bash benchmarks/realistic/pose_free.sh SET [NAME]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd); root=$(cd "$here/../.." && pwd)
R=${R:-$root/benchmarks/work/realistic_smooth}
PY=${PY:-$root/.venv/bin/python}
set_=$1; name=${2:-posefree}
src=$R/$set_; out=$R/${set_}_$name; mkdir -p "$out/found" "$out/repaired"
for d in "$out/found" "$out/repaired"; do
  ln -sf "$src/ground_truth.npz" "$d/ground_truth.npz"; ln -sf "$src/reference_closed.pdb" "$d/reference_closed.pdb"
done
T="--threads ${THREADS:-1}"
score_poses() {  # STAR -> median / mean rotation and shift errors
  "$PY" "$here/score_poses.py" "$1" "$src/ground_truth.npz"
}
"$PY" -m continuousflex_geodl poses --particles "$src/particles.star" --reference "$src/reference_closed.pdb" \
    --model-rounds 0 --out "$out/found/particles.star" $T > "$out/poses_global.log" 2>&1
score_poses "$out/found/particles.star"
"$PY" -m continuousflex_geodl train --particles "$out/found/particles.star" --reference "$src/reference_closed.pdb" \
    --out "$out/model1" $T > "$out/train1.log" 2>&1
"$PY" -m continuousflex_geodl poses --particles "$out/found/particles.star" --model "$out/model1" \
    --out "$out/repaired/particles.star" $T > "$out/poses_repair.log" 2>&1
score_poses "$out/repaired/particles.star"
"$PY" -m continuousflex_geodl train --particles "$out/repaired/particles.star" --reference "$src/reference_closed.pdb" \
    --out "$out/model2" $T > "$out/train2.log" 2>&1
"$PY" -m continuousflex_geodl infer --model "$out/model2" --particles "$out/repaired/particles.star" \
    --out "$out/z.npy" $T > "$out/infer.log" 2>&1
"$PY" "$here/score_latents.py" "$out/z.npy" "$src/ground_truth.npz"
