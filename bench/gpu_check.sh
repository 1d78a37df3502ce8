#!/usr/bin/env bash
# The GPU check of issue 11, in one go, on one H100/H200 (aim: under 8 minutes):
#   1. the 0.5B shape at max_length 1024 with every ablation (and torch.profiler tables of the
#      engine vs its loss-on-every-token variant: where completion-only loss spends its time);
#   2. the 8B shape at max_length 1024: engine vs TRL's defaults vs the seed script (vs Unsloth
#      when it is installed);
#   3. the memory calibration on CUDA (quick grid).
# Everything lands in OUT (default bench/results/gpu_check_<gpu>), with nvidia-smi and the
# package versions; each step has its own time limit so one slow step cannot eat the others.
#
#   bash bench/gpu_check.sh [OUT]
#   SMOKE=1 bash bench/gpu_check.sh /tmp/smoke     # the same steps on `demo`, tiny, to try it on a CPU
#   bash .device/run.sh bash bench/gpu_check.sh "$OUT/gpu"     # on the lent device machine
set -uo pipefail
cd "$(dirname "$0")/.."
gpu="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr ' ' '-' || echo unknown)"
OUT="${1:-bench/results/gpu_check_${gpu:-unknown}}"
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false FINETUNE_WORKSPACE="${FINETUNE_WORKSPACE:-$PWD/workspace}"
PY=${PYTHON:-$(command -v python3 || command -v python)}
big=qwen2.5-0.5b huge=llama-3.1-8b len=1024 steps=5 cal=(--quick)
if [ "${SMOKE:-0}" = 1 ]; then big=demo huge=demo len=128 steps=2 cal=(--quick --only 0); fi
log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$OUT/gpu_check.log"; }
step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  log "start $name (limit ${limit}s): $*"
  local t0=$SECONDS
  timeout --signal=INT --kill-after=20 "$limit" "$@" >"$OUT/$name.out" 2>"$OUT/$name.err"
  local rc=$?
  log "end $name: exit $rc after $((SECONDS - t0))s"
  tail -n 25 "$OUT/$name.out" | tee -a "$OUT/gpu_check.log" >/dev/null
}

log "gpu check on ${gpu}"
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
"$PY" - >"$OUT/versions.txt" 2>&1 <<'PY'
import importlib
for name in ("torch", "transformers", "trl", "peft", "bitsandbytes", "accelerate", "datasets", "liger_kernel",
             "flash_attn", "kernels", "unsloth"):
    try:
        module = importlib.import_module(name)
        print(name, getattr(module, "__version__", "?"))
    except Exception as exc:
        print(name, "not installed" if isinstance(exc, ImportError) else f"unusable: {type(exc).__name__}")
import torch
print("cuda", torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")
PY

device=cuda; "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || device=cpu
step q05 240 "$PY" -m finetune.cli bench --model "$big" --max-length "$len" --steps "$steps" --warmup 2 \
  --repeats 1 --ablate --profile "$OUT/profile_q05" --save "$OUT/gpu_${big}_${len}"
step l8b 200 "$PY" -m finetune.cli bench --model "$huge" --max-length "$len" --steps "$((steps - 1))" --warmup 2 \
  --repeats 1 --save "$OUT/gpu_${huge}_${len}_vs_peers"
step calibration 120 "$PY" bench/calibrate_memory.py --device "$device" "${cal[@]}" --out "$OUT"
log "done: $(ls "$OUT" | tr '\n' ' ')"
