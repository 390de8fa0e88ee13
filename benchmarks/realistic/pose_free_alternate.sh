#!/bin/bash
# Second round of the pose-free route (after pose_free.sh SET): decode 3
# structures along the first model's latent PC1, global pose search against
# them (several references: each particle keeps the best), train, repair the
# poses with the new model (poses --model), train again, infer, score.
# Usage (repository root): bash benchmarks/realistic/pose_free_alternate.sh SET
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd); root=$(cd "$here/../.." && pwd)
R=${R:-$root/benchmarks/work/realistic_smooth}
PY=${PY:-$root/.venv/bin/python}; P=("$PY" -m continuousflex_geodl)
T="--threads ${THREADS:-2}"
src=$R/$1; D=$R/${1}_posefree
mkdir -p "$D/multi_all" "$D/repaired2"
"${P[@]}" infer --model "$D/model1" --particles "$D/found/particles.star" --out "$D/z1.npy" $T > "$D/infer1.log" 2>&1
"$PY" -c "import sys, numpy as np; from continuousflex_geodl.core.poses.joint import axis_latents
np.save(sys.argv[1] + '/refs_latents.npy', axis_latents(np.load(sys.argv[1] + '/z1.npy')))" "$D"
"${P[@]}" decode --model "$D/model1" --latents "$D/refs_latents.npy" --out "$D/refs1" > "$D/decode1.log" 2>&1
"${P[@]}" poses --particles "$src/particles.star" --reference "$D"/refs1/vol_00{0,1,2}.mrc --model-rounds 0 \
    --out "$D/multi_all/particles.star" $T > "$D/multi_all/poses.log" 2>&1
"${P[@]}" train --particles "$D/multi_all/particles.star" --reference "$src/reference_closed.pdb" --out "$D/model3" $T > "$D/train3.log" 2>&1
"${P[@]}" poses --particles "$D/multi_all/particles.star" --model "$D/model3" --out "$D/repaired2/particles.star" $T > "$D/repair2.log" 2>&1
"${P[@]}" train --particles "$D/repaired2/particles.star" --reference "$src/reference_closed.pdb" --out "$D/model4" $T > "$D/train4.log" 2>&1
"${P[@]}" infer --model "$D/model4" --particles "$D/repaired2/particles.star" --out "$D/z4.npy" $T > "$D/infer4.log" 2>&1
for s in multi_all repaired2; do
  "$PY" "$here/score_poses.py" "$D/$s/particles.star" "$src/ground_truth.npz"
done
"$PY" "$here/score_latents.py" "$D/z4.npy" "$src/ground_truth.npz"
