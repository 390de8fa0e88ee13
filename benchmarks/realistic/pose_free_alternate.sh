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
"$PY" - "$D" <<'PYEOF'
import sys, numpy as np
d = sys.argv[1]; z = np.load(d + '/z1.npy'); zc = z - z.mean(0)
pc = zc @ np.linalg.svd(zc, full_matrices=False)[2][0]
pts = [z[np.argsort(np.abs(pc - np.percentile(pc, q)))[:50]].mean(0) for q in (5, 50, 95)]
np.save(d + '/refs_latents.npy', np.array(pts))
PYEOF
"${P[@]}" decode --model "$D/model1" --latents "$D/refs_latents.npy" --out "$D/refs1" > "$D/decode1.log" 2>&1
"${P[@]}" poses --particles "$src/particles.star" --reference "$D"/refs1/vol_00{0,1,2}.mrc --model-rounds 0 \
    --out "$D/multi_all/particles.star" $T > "$D/multi_all/poses.log" 2>&1
"${P[@]}" train --particles "$D/multi_all/particles.star" --reference "$src/reference_closed.pdb" --out "$D/model3" $T > "$D/train3.log" 2>&1
"${P[@]}" poses --particles "$D/multi_all/particles.star" --model "$D/model3" --out "$D/repaired2/particles.star" $T > "$D/repair2.log" 2>&1
"${P[@]}" train --particles "$D/repaired2/particles.star" --reference "$src/reference_closed.pdb" --out "$D/model4" $T > "$D/train4.log" 2>&1
"${P[@]}" infer --model "$D/model4" --particles "$D/repaired2/particles.star" --out "$D/z4.npy" $T > "$D/infer4.log" 2>&1
for s in multi_all repaired2; do
  "$PY" - "$D/$s/particles.star" "$src/ground_truth.npz" <<'PYEOF'
import sys, numpy as np
sys.path.insert(0, 'benchmarks/realistic')
from pose_repair import errors
from continuousflex_geodl.core.particles import load_particles
p = load_particles(sys.argv[1]); gt = np.load(sys.argv[2])
print(sys.argv[1], errors(p.euler, p.shifts, gt, np.arange(len(p))))
PYEOF
done
"$PY" "$here/score_latents.py" "$D/z4.npy" "$src/ground_truth.npz"
