#!/bin/bash
# The pose-free route as a user runs it (issue 12): the star's angles are
# ignored; `poses` (global search against the closed-state reference, then
# its default --model-rounds), `train` on the posed star, `infer`; pose errors
# of every stage against the truth, latents scored.
# Usage (repository root): bash benchmarks/realistic/pose_free_command.sh SET [NAME]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd); root=$(cd "$here/../.." && pwd)
R=${R:-$root/benchmarks/work/realistic_smooth}
PY=${PY:-$root/.venv/bin/python}; P=("$PY" -m continuousflex_geodl)
T="--threads ${THREADS:-1}"
src=$R/$1; out=$R/${1}_${2:-posecmd}; mkdir -p "$out"
ln -sf "$src/ground_truth.npz" "$out/ground_truth.npz"
/usr/bin/time -f '%e s wall, %M kB max RSS' "${P[@]}" poses --particles "$src/particles.star" \
    --reference "$src/reference_closed.pdb" --out "$out/posed.star" $T > "$out/poses.log" 2>&1
/usr/bin/time -f '%e s wall, %M kB max RSS' "${P[@]}" train --particles "$out/posed.star" \
    --reference "$src/reference_closed.pdb" --out "$out/model" $T > "$out/train.log" 2>&1
"${P[@]}" infer --model "$out/model" --particles "$out/posed.star" --out "$out/z.npy" $T > "$out/infer.log" 2>&1
for s in posed_rounds/search_reference.star posed_rounds/round1/search.star posed.star; do
  "$PY" "$here/score_poses.py" "$out/$s" "$src/ground_truth.npz"
done
"$PY" "$here/score_latents.py" "$out/z.npy" "$src/ground_truth.npz"
uptime
