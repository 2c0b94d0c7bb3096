#!/usr/bin/env bash
# The one prepared GPU run: everything vol25d claims about a CUDA GPU, measured in one go, into one folder.
#
#   bash experiments/gpu_check.sh [--out DIR] [--wheels DIR] [--limit-s 340] [--dry-run]
#
# OUT gets the results (summary.md, the steps' logs and reports); OUT/work the data, run folder and
# predictions they were made from.
#
# Steps, each with its own share of the time limit, its log in OUT/<step>.log and a row in OUT/steps.tsv:
#   install   pip-installs every wheel in --wheels (monai, nibabel, kornia, kornia_rs: experiments/gpu_wheels.sh
#             fetches them) into OUT/site without resolving dependencies; vol25d itself runs from this
#             checkout (PYTHONPATH), so nothing else is pulled in
#   checks    experiments/gpu_check.py ops: every operator and Triton kernel against the reference at 128³
#             and 256³ (fp32 and bf16; forward, gradients, adjoint) and the model on CUDA against the CPU
#   train     the CLI with --amp: make-phantoms (96³), train --path 1, train --path 2, predict, evaluate
#             (time, peak GPU memory, Dice)
#   bench_ops experiments/bench_ops.py --device cuda at 128³, 256³ and 512×512×256 (per-view-floor ratios)
#   benchmark experiments/benchmark.py --sweep (a whole-volume step per method and size) and a short-budget
#             comparison at 128³
#   summary   OUT/summary.md: GPU, driver, torch, Triton, each step's status and the figures
# A step that would start after the limit is recorded as skipped; one that runs into it is stopped and
# recorded as such; the summary is written whatever happens (also on Ctrl-C, and by this script itself when
# gpu_check.py cannot write it).
#
# Exit status: 0 when every step ran and passed; 1 when a step failed, was stopped or skipped, or the summary
# could not be written (summary.md says which); 2 for a bad option; 130 on Ctrl-C or a kill.
#
# --dry-run: the same steps on the CPU at tiny sizes, the Triton kernels in the interpreter, no install; the
# test suite runs it so that the script cannot rot.
set -uo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
out=""
wheels=""
limit_s=340
dry_run=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --wheels) wheels=$2; shift 2 ;;
    --limit-s) limit_s=$2; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) awk 'NR > 1 { if (!/^#/) exit; print }' "$0"; exit 0 ;;
    *) echo "error: unknown option $1; see bash experiments/gpu_check.sh --help" >&2; exit 2 ;;
  esac
done
case "$limit_s" in ''|*[!0-9]*) echo "error: --limit-s takes whole seconds; got '$limit_s'" >&2; exit 2 ;; esac
if [ -n "$wheels" ] && [ ! -d "$wheels" ]; then
  echo "error: --wheels $wheels is not a folder; pass the folder that holds the wheels" >&2; exit 2
fi
[ -n "$out" ] || out="$here/experiments/results/gpu_check-$(date -u +%Y%m%d-%H%M)"
mkdir -p "$out" || { echo "error: cannot create --out $out" >&2; exit 2; }
out=$(cd "$out" && pwd)
work="$out/work"  # phantoms, run folder, predictions, installed wheels: not results (git ignores it)
mkdir -p "$work"
: > "$out/steps.tsv"

cd "$here"
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" PYTHONWARNINGS=ignore
python=${PYTHON:-python3}
start=$(date +%s)
deadline=$((start + limit_s))

if [ "$dry_run" = 1 ]; then
  export TRITON_INTERPRET=1 CUDA_VISIBLE_DEVICES="" OMP_NUM_THREADS=1
  device=cpu sizes="8" views=4 model_size=12 phantom_size=16 phantoms=4 epochs1=1 epochs2=1
  bench_args=(--smoke --device cpu --threads 1) benchmark_args=(--smoke --sweep)
  train_config="$work/tiny.yaml"
  printf 'model: {channels: [4, 8, 16], strides: [2, 2], num_res_units: 1, directions: 8, views: 2}\ntrain: {steps_per_case: 1}\n' > "$train_config"
else
  device=cuda sizes="128 256" views=16 model_size=64 phantom_size=96 phantoms=8 epochs1=8 epochs2=3
  bench_args=(--device cuda --sizes 128 256 512x512x256 --repeats 3)
  benchmark_args=(--sweep --size 128 --n-train 8 --n-test 2 --budget-s 20)
  train_config=""
fi

# run_step NAME SHARE_S COMMAND…: runs COMMAND with at most SHARE_S seconds and what is left before the
# deadline, logging to OUT/NAME.log; records "NAME<TAB>status<TAB>seconds" in OUT/steps.tsv.
run_step() {
  local name=$1 share=$2; shift 2
  local now left began status rc
  now=$(date +%s); left=$((deadline - now))
  if [ "$left" -lt 5 ]; then
    printf '%s\tskipped (time limit)\t0\n' "$name" >> "$out/steps.tsv"; return 0
  fi
  [ "$share" -lt "$left" ] || share=$left
  began=$(date +%s)
  echo "== $name (≤ ${share} s)"
  timeout --signal=TERM --kill-after=10 "$share" "$@" > "$out/$name.log" 2>&1
  rc=$?
  case $rc in
    0) status=ok ;;
    124|137) status="stopped at ${share} s" ;;
    *) status="failed (exit $rc)" ;;
  esac
  printf '%s\t%s\t%s\n' "$name" "$status" "$(( $(date +%s) - began ))" >> "$out/steps.tsv"
  echo "   $status; last lines:"; tail -n 3 "$out/$name.log" | sed 's/^/   /'
  return 0
}

# The exit status (see the header): a step whose status is not "ok", or no summary, is a failure.
finish() {
  local rc=$? bad
  if ! "$python" experiments/gpu_check.py summary --out "$out" > /dev/null 2>"$out/summary.log"; then
    echo "summary failed: see $out/summary.log" >&2
    {  # the steps' table without the figures, so that the run still says what happened
      printf '# vol25d GPU check\n\nexperiments/gpu_check.py could not write the summary (see summary.log); '
      printf 'the steps as recorded in steps.tsv:\n\n| step | status | seconds |\n|---|---|---|\n'
      awk -F'\t' '{ printf "| %s | %s | %s |\n", $1, $2, $3 }' "$out/steps.tsv"
    } > "$out/summary.md"
    [ "$rc" -ne 0 ] || rc=1
  fi
  bad=$(awk -F'\t' '$2 != "ok" { n++ } END { print n + 0 }' "$out/steps.tsv")
  [ "$rc" -ne 0 ] || [ "$bad" -eq 0 ] || rc=1
  echo "== summary: $out/summary.md ($(( $(date +%s) - start )) s); $bad step(s) not ok; exit $rc"
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT TERM

if [ -n "$wheels" ]; then
  # Into a folder of its own on PYTHONPATH: the node's packages stay as they are, nothing is resolved.
  site="$work/site"
  run_step install 90 "$python" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" "$wheels"/*.whl
  export PYTHONPATH="$PYTHONPATH:$site"
fi

run_step checks 80 "$python" experiments/gpu_check.py ops --device "$device" --sizes $sizes --views "$views" \
  --model-size "$model_size" --out "$out"

train_run() {
  set -e
  local cli=("$python" -m vol25d)
  local config=()
  [ -z "$train_config" ] || config=(--config "$train_config")
  "${cli[@]}" make-phantoms "$work/data" --n "$phantoms" --size "$phantom_size" --seed 0
  "${cli[@]}" make-phantoms "$work/test" --n 2 --size "$phantom_size" --seed 1000
  "${cli[@]}" train --path 1 --data "$work/data" --out "$work/run" --device "$device" --amp --epochs "$epochs1" \
    --steps-per-case 8 "${config[@]}"
  "${cli[@]}" train --path 2 --data "$work/data" --out "$work/run" --device "$device" --amp --epochs "$epochs2" \
    --init "$work/run/path1.pt"
  "${cli[@]}" predict -i "$work/test/imagesTr" -o "$work/pred" -m "$work/run/path2.pt" --device "$device"
  "${cli[@]}" evaluate --pred "$work/pred" --ref "$work/test/labelsTr" --csv "$out/evaluation.csv"
}
export python out work device phantoms phantom_size epochs1 epochs2 train_config
export -f train_run
run_step train 110 bash -c train_run

# bench_ops --smoke writes no figures under experiments/results (where OUT is by default): a dry run's go to a
# temporary file first, then beside the other steps' output.
bench_out="$out/bench_ops.md"
[ "$dry_run" = 1 ] && bench_out="$(mktemp -d)/bench_ops.md"
run_step bench_ops 90 "$python" experiments/bench_ops.py "${bench_args[@]}" --out "$bench_out"
[ "$bench_out" = "$out/bench_ops.md" ] || [ ! -f "$bench_out" ] || mv "$bench_out" "$out/bench_ops.md"

# Every method but nnU-Net's: the device's wheels (gpu_wheels.sh) carry no nnunetv2.
run_step benchmark 100 "$python" experiments/benchmark.py "${benchmark_args[@]}" --out-dir "$out" --name benchmark \
  --methods vol25d,dynunet3d,slice2d,stack25d,unet3d,unet3d-patch
