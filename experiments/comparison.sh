#!/usr/bin/env bash
# The comparison of issue 29 as it was run: every (seed, method) of benchmark.py as its own process, on
# --workers cores at once (default 2), each pinned to one core with one torch thread; nnU-Net augments in its
# main process (nnUNet_n_proc_DA=0), as the other methods do. Reports go to OUT/NAME_sSEED_METHOD.md (logs in OUT/logs), then
# --collect makes OUT/NAME.md. Run it from the repository root with the bench extra installed.
#
#   bash experiments/comparison.sh OUT NAME "20 21 22 23 24" "vol25d nnunet-2d nnunet-3d slice2d dynunet3d" \
#       --generator other --size 48 --budget-s 300
set -euo pipefail
out=$1 name=$2 seeds=$3 methods=$4
shift 4
workers=${WORKERS:-2}
python=${PYTHON:-python}
mkdir -p "$out" "$out/logs"
jobs=()
for seed in $seeds; do for method in $methods; do jobs+=("$seed $method"); done; done
run_worker() {  # worker index w takes jobs w, w + workers, …
    local w=$1 i
    shift
    for ((i = w; i < ${#jobs[@]}; i += workers)); do
        read -r seed method <<< "${jobs[$i]}"
        local report="${name}_s${seed}_${method}"
        [[ -f "$out/$report.md" ]] && continue  # done by an earlier, interrupted run
        echo "$(date -u +%H:%M:%S) core $w: seed $seed $method"
        OMP_NUM_THREADS=1 nnUNet_n_proc_DA=0 taskset -c "$w" "$python" experiments/benchmark.py --device cpu \
            --threads 1 --seed "$seed" --methods "$method" --name "$report" --out-dir "$out" "$@" \
            > "$out/logs/$report.log" 2>&1 || echo "seed $seed $method failed: see $out/logs/$report.log"
    done
}
for ((w = 0; w < workers; w++)); do run_worker "$w" "$@" & done
wait
"$python" experiments/benchmark.py --collect "$out/${name}"_s*_*.md --name "$name" --out-dir "$out"
