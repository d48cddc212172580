#!/usr/bin/env bash
# tools/gpu_check.sh — one call on a CUDA machine: the CUDA tests, the two speed benchmarks on CUDA,
# and as many cells of the fronts preset as fit in a time window; a CPU fallback where no CUDA
# device is present.
#
#   tools/gpu_check.sh [--dry-run] [--budget S] [--cells-seconds S] [--max-cells N] [--cells K1,K2]
#                      [--cells-only] DIR
#
# DIR holds what the machine cannot download (it reaches no package registry and no data host):
#   DIR/cifar-10-batches-py/   CIFAR-10 in the standard layout (data_batch_1..5, test_batch); or, where
#                              that is missing, the JPEG-q75 archive and its converter, copied from
#                              ../shared as DIR/tools/cifar10_from_jpeg.py and DIR/data/cifar10-jpeg75/
#                              (18 MB instead of 177 MB; the script builds the batches from it)
#   DIR/wheels/                optional: wheels of missing Python packages (pyautoattack, tomli-w,
#                              typer, ...), installed with pip install --no-index --find-links DIR/wheels
#                              only where the module is missing; e.g. on a machine with a registry:
#                              pip download --no-deps -d DIR/wheels pyautoattack==0.2.0 tomli-w
# To carry DIR to a device machine (64 MiB at most travel), make it a folder of the repository
# that git ignores, e.g.
#   mkdir -p gpu_in/tools gpu_in/data && echo /gpu_in/ >> .git/info/exclude
#   cp ../shared/tools/cifar10_from_jpeg.py gpu_in/tools/ && cp -r ../shared/data/cifar10-jpeg75 gpu_in/data/
# and run `tools/gpu_check.sh gpu_in` with carry ["gpu_in"]. torch must already be installed there.
#
# Steps, each under its own timeout inside the total budget (--budget, default 570 s):
#   1. pytest -m gpu (the CUDA tests; none marked yet is reported, not an error)      ≤ 90 s
#   2. benchmarks/throughput.py --device cuda --precision fp32,bf16                    ≤ 75 s
#   3. benchmarks/bounds_speed.py --device cuda --precision fp32,bf16                  ≤ 60 s
#   4. the fronts preset's cells in its order (headline pair first), each
#      `approp reproduce --preset fronts --device cuda --only eps*-KEY` under `timeout` until
#      the cells window ends (--cells-seconds, default 480 s = 8 min, cut to the budget left);
#      every cell trains at the preset's own budget (45,000 images × 20 epochs, bf16 training,
#      fp32 evaluation with AutoAttack); a cell cut off resumes per epoch on the next call while
#      the work folder survives. Then `approp fronts` writes the fronts view of what finished.
# A device call runs at most 600 s, so the default budget gives the cells what the checks leave
# (the checks' limits add up to 225 s; on a GPU they take less); --cells-only skips steps 1–3 and
# gives the cells the whole window, e.g. in a second call on the same machine.
# Without CUDA (CPU fallback) step 1 is skipped (its tests need a device) and says so, steps 2–3
# run on the CPU with a few steps, and step 4 runs a tiny-budget copy of the preset
# (tools/gpu_check_preset.py: 64 images, 2 epochs, 16 test points): it checks the steps, it
# measures nothing. --dry-run checks DIR, Python, torch and the packages, prints the plan and exits.
#
# Output: the work folder ($GPU_CHECK_WORK, default /tmp/approp_gpu_check) holds the runs; the
# output folder ($OUT if set, else ./gpu_check_out) receives at most 8 files, marked by device:
#   gpu_check_summary.md        device, every step's command, status, seconds and output tail,
#                               what was skipped, the cells finished, the fronts verdicts
#   gpu_check.log               everything the steps printed
#   fronts_MODE.tar.gz          the fronts folder without weights and training state (MODE: gpu | cpu_fallback)
#   fronts_MODE_weights.tar.gz  the cells' model.safetensors (split into 15 MiB parts .partNN if larger)
# Commit GPU results beside the CPU ones: tar xzf fronts_gpu.tar.gz -C docs/results (→ docs/results/fronts_gpu).
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
BUDGET=570 CELLS_SECONDS=480 MAX_CELLS=99 DRY=0 CELLS="" DIR="" CELLS_ONLY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --cells-only) CELLS_ONLY=1 ;;
    --budget) BUDGET="$2"; shift ;;
    --cells-seconds) CELLS_SECONDS="$2"; shift ;;
    --max-cells) MAX_CELLS="$2"; shift ;;
    --cells) CELLS="${2//,/ }"; shift ;;
    -h|--help) sed -n '2,/^set -uo/{/^set -uo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    -*) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) DIR="$1" ;;
  esac
  shift
done
for v in "$BUDGET" "$CELLS_SECONDS" "$MAX_CELLS"; do
  [[ "$v" =~ ^[0-9]+$ ]] || { echo "error: --budget, --cells-seconds and --max-cells take whole numbers; got $v" >&2; exit 2; }
done
[ -n "$DIR" ] || { echo "error: give DIR, the folder holding cifar-10-batches-py (and optionally wheels/)" >&2; exit 2; }
GIVEN="$DIR"
DIR="$(cd "$DIR" 2>/dev/null && pwd)" || { echo "error: no folder $GIVEN" >&2; exit 2; }

START=$(date +%s)
OUT_DIR="${OUT:-$PWD/gpu_check_out}"
WORK="${GPU_CHECK_WORK:-/tmp/approp_gpu_check}"
mkdir -p "$OUT_DIR" "$WORK"
LOG="$OUT_DIR/gpu_check.log" SUMMARY="$OUT_DIR/gpu_check_summary.md"
export PYTHONPATH="$REPO/python${PYTHONPATH:+:$PYTHONPATH}" APPROP_DATA="$DIR" MPLBACKEND=Agg
: >"$LOG"
say() { echo "$*" | tee -a "$LOG"; }
left() { echo $((BUDGET - ($(date +%s) - START))); }

# Python, torch and the packages approp imports; missing ones come from DIR/wheels where they exist.
# missing: the pip names of the packages approp needs that this Python cannot find (no import: fast).
missing() {
  "$PY" -c 'import importlib.util as u
need = {"typer": "typer", "rich": "rich", "safetensors": "safetensors", "tomli_w": "tomli-w", "numpy": "numpy",
        "matplotlib": "matplotlib", "pyautoattack": "pyautoattack", "pytest": "pytest", "PIL": "pillow"}
print(" ".join(sorted(pip for mod, pip in need.items() if u.find_spec(mod) is None)))'
}
MISSING="$(missing)"
if [ -n "$MISSING" ] && [ "$DRY" = 0 ] && [ -d "$DIR/wheels" ]; then
  say "installing from $DIR/wheels: $MISSING"
  "$PY" -m pip install --no-index --find-links "$DIR/wheels" $MISSING >>"$LOG" 2>&1 || say "pip could not install all of: $MISSING"
  MISSING="$(missing)"
fi
# The data: the batches as given, else built from the JPEG archive carried beside its converter.
if [ ! -f "$DIR/cifar-10-batches-py/test_batch" ] && [ -f "$DIR/tools/cifar10_from_jpeg.py" ] && [ "$DRY" = 0 ]; then
  say "building $DIR/cifar-10-batches-py from the JPEG archive"
  "$PY" "$DIR/tools/cifar10_from_jpeg.py" "$DIR" >>"$LOG" 2>&1 || say "the conversion failed (see gpu_check.log)"
fi
if [ ! -f "$DIR/cifar-10-batches-py/test_batch" ] && [ -f "$DIR/data/cifar10-jpeg75/train.npz" ] && [ "$DRY" = 1 ]; then
  DATA_NOTE="built from the JPEG archive at the start of a real run"
else
  for f in data_batch_1 data_batch_2 data_batch_3 data_batch_4 data_batch_5 test_batch; do
    [ -f "$DIR/cifar-10-batches-py/$f" ] || { say "error: $DIR/cifar-10-batches-py/$f is missing (the header says how to carry CIFAR-10)"; exit 2; }
  done
  DATA_NOTE="cifar-10-batches-py present"
fi
# One torch import: its version line, then the CUDA device's name (an empty line without one).
PROBE="$("$PY" -c 'import sys, torch
print(sys.version.split()[0], "torch", torch.__version__)
print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")' 2>>"$LOG")" \
  || { say "error: $PY cannot import torch (it must be installed on the machine)"; exit 2; }
VERSIONS="$(sed -n 1p <<<"$PROBE")" DEVICE_NAME="$(sed -n 2p <<<"$PROBE")"
if [ -n "$DEVICE_NAME" ]; then MODE=gpu DEV=cuda; else MODE=cpu_fallback DEV=cpu; fi
FRONTS="$WORK/fronts_$MODE"
PRESET="fronts"
if [ "$MODE" = cpu_fallback ]; then PRESET="$WORK/fronts_tiny.toml"; fi
[ -n "$CELLS" ] || CELLS="$("$PY" "$REPO/tools/gpu_check_preset.py" "$REPO/configs/presets/fronts.toml" --keys)"
CLI=("$PY" -c "from approp.cli import main; main()")

if [ "$MODE" = gpu ]; then
  STEPS=("tests|90|$PY -m pytest -q -m gpu -p no:cacheprovider $REPO/tests"
         "throughput|75|$PY $REPO/benchmarks/throughput.py --device cuda --precision fp32,bf16"
         "bounds_speed|60|$PY $REPO/benchmarks/bounds_speed.py --device cuda --precision fp32,bf16")
else
  STEPS=("throughput|60|$PY $REPO/benchmarks/throughput.py --device cpu --batch-size 16 --steps 1 --warmup 1 --algos standard,APP(tanh)"
         "bounds_speed|45|$PY $REPO/benchmarks/bounds_speed.py --device cpu --batch 8 --repeats 2")
fi
[ "$CELLS_ONLY" = 0 ] || STEPS=()

{
  echo "# GPU check — $([ "$MODE" = gpu ] && echo "GPU: $DEVICE_NAME (cuda)" || echo "CPU FALLBACK: no CUDA device, nothing here is a GPU result")"
  echo
  echo "Started $(date -u +%FT%TZ); repository $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?'); budget $BUDGET s; data $DIR ($DATA_NOTE); Python $VERSIONS."
  echo "Missing packages: ${MISSING:-none}."
  echo
  echo "## Plan"
  echo
  [ "$MODE" = gpu ] || [ "$CELLS_ONLY" = 1 ] || echo "- skipped: pytest -m gpu (its tests need a CUDA device)"
  [ "$CELLS_ONLY" = 0 ] || echo "- skipped (--cells-only): the tests and the benchmarks"
  for s in "${STEPS[@]+"${STEPS[@]}"}"; do IFS='|' read -r name limit cmd <<<"$s"; echo "- $name (≤ $limit s): \`$cmd\`"; done
  echo "- cells (window ≤ $CELLS_SECONDS s, at most $MAX_CELLS): $CELLS — \`approp reproduce --preset $PRESET --device $DEV --only 'eps*-KEY' --out $FRONTS\`"
  echo "- then \`approp fronts $FRONTS --preset $PRESET\`"
} >"$SUMMARY"

if [ "$DRY" = 1 ]; then
  cat "$SUMMARY"
  echo "dry run: inputs checked, nothing run"
  exit 0
fi

# step NAME LIMIT CMD...: runs CMD under timeout (at most LIMIT s and the budget left), appends to the summary.
step() {
  local name="$1" limit="$2"; shift 2
  local cap; cap=$(($(left) - 20)); [ "$cap" -lt "$limit" ] && limit="$cap"
  if [ "$limit" -le 5 ]; then echo "- **$name**: skipped, the budget is spent" >>"$SUMMARY"; return 0; fi
  local t0 out rc; t0=$(date +%s); out="$WORK/$name.out"
  say "== $name (≤ ${limit} s): $*"
  timeout --kill-after=10 "$limit" "$@" >"$out" 2>&1; rc=$?
  cat "$out" >>"$LOG"
  local what="ok"
  case $rc in 0) ;; 124|137) what="cut off at ${limit} s" ;; 5) [ "$name" = tests ] && what="no tests are marked gpu" || what="exit 5" ;; *) what="failed (exit $rc)" ;; esac
  { echo; echo "### $name: $what in $(($(date +%s) - t0)) s"; echo; echo '```'; tail -n 40 "$out"; echo '```'; } >>"$SUMMARY"
  return 0
}

echo -e "\n## Steps" >>"$SUMMARY"
for s in "${STEPS[@]+"${STEPS[@]}"}"; do
  IFS='|' read -r name limit cmd <<<"$s"
  read -r -a argv <<<"$cmd"
  step "$name" "$limit" "${argv[@]}"
done

if [ "$MODE" = cpu_fallback ]; then
  "$PY" "$REPO/tools/gpu_check_preset.py" "$REPO/configs/presets/fronts.toml" "$PRESET" >>"$LOG" 2>&1
fi
echo -e "\n## Cells\n" >>"$SUMMARY"
WINDOW_END=$(($(date +%s) + CELLS_SECONDS)) RAN=0
for key in $CELLS; do
  now=$(date +%s); limit=$((WINDOW_END - now)); cap=$(($(left) - 40)); [ "$cap" -lt "$limit" ] && limit="$cap"
  if [ "$RAN" -ge "$MAX_CELLS" ] || [ "$limit" -lt 30 ]; then echo "- $key: not run (window or budget spent)" >>"$SUMMARY"; continue; fi
  RAN=$((RAN + 1)) t0=$(date +%s)
  say "== cell $key (≤ ${limit} s)"
  timeout --kill-after=15 "$limit" "${CLI[@]}" reproduce --preset "$PRESET" --device "$DEV" --only "eps*-$key" \
    --out "$FRONTS" --data-dir "$DIR" --quiet >>"$LOG" 2>&1; rc=$?
  case $rc in 0) what="finished" ;; 124|137) what="cut off (resumes per epoch on the next call)" ;; *) what="failed (exit $rc, see gpu_check.log)" ;; esac
  echo "- $key: $what in $(($(date +%s) - t0)) s" >>"$SUMMARY"
done
if [ -d "$FRONTS/cells" ]; then
  "${CLI[@]}" fronts "$FRONTS" --preset "$PRESET" >>"$LOG" 2>&1 && \
    { echo -e "\n## Fronts verdicts\n"; sed -n '/^- \*\*/p' "$FRONTS/fronts_verdicts.md"; echo
      sed -n '/^## Pending/,/^!\[/{/^!\[/d;p}' "$FRONTS/fronts_verdicts.md"; } >>"$SUMMARY"
fi
echo "$MODE: $DEVICE_NAME" >"$FRONTS/DEVICE" 2>/dev/null

# Pack: the results without weights or training state, and the weights (in 15 MiB parts if larger).
if [ -d "$FRONTS" ]; then
  tar -czf "$OUT_DIR/fronts_$MODE.tar.gz" -C "$WORK" --exclude=model.safetensors --exclude=train_state.pt \
    --exclude=eval_param_attack.safetensors --exclude='*.tmp' "fronts_$MODE"
  weights=$(cd "$WORK" && find "fronts_$MODE" -name model.safetensors | sort)
  if [ -n "$weights" ]; then
    (cd "$WORK" && tar -czf "$OUT_DIR/fronts_${MODE}_weights.tar.gz" $weights)
    if [ "$(stat -c %s "$OUT_DIR/fronts_${MODE}_weights.tar.gz")" -gt $((15 * 1024 * 1024)) ]; then
      split -b 15M -d -a 2 "$OUT_DIR/fronts_${MODE}_weights.tar.gz" "$OUT_DIR/fronts_${MODE}_weights.tar.gz.part"
      rm "$OUT_DIR/fronts_${MODE}_weights.tar.gz"
    fi
  fi
fi
echo -e "\nFinished $(date -u +%FT%TZ) after $(($(date +%s) - START)) s." >>"$SUMMARY"
say "summary: $SUMMARY"
