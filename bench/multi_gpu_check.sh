#!/usr/bin/env bash
# The multi-GPU check of issue 15, for a host with 2+ GPUs (never run here: this project's GPUs come
# one at a time). For each strategy (ddp, fsdp, zero3 when deepspeed is installed) and each method
# (QLoRA 4bit, LoRA 16-bit) it trains MODEL for a few steps under `accelerate launch` with the shipped
# config, then writes one table: the per-GPU estimate (`finetune estimate --gpus N --strategy S`)
# next to what rank 0 measured (torch.cuda.max_memory_allocated, the run's metrics), the sharding
# each rank reported, and whether plain PEFT loads the saved adapter.
#
#   bash bench/multi_gpu_check.sh [OUT]                 # all GPUs of this host
#   MODEL=meta-llama/Llama-3.1-70B NPROC=4 bash bench/multi_gpu_check.sh /tmp/out   # the 70B case
#   SMOKE=1 bash bench/multi_gpu_check.sh /tmp/smoke    # the same steps on `demo`, 2 CPU processes
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-bench/results/multi_gpu_check}"
mkdir -p "$OUT"
export TOKENIZERS_PARALLELISM=false FINETUNE_WORKSPACE="${FINETUNE_WORKSPACE:-$PWD/workspace}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's engine in every rank
PY=${PYTHON:-$(command -v python3 || command -v python)}
MODEL=${MODEL:-Qwen/Qwen2.5-7B-Instruct}
NPROC=${NPROC:-$(nvidia-smi -L 2>/dev/null | wc -l)}
LEN=${LEN:-1024} STEPS=${STEPS:-6}
strategies=(ddp fsdp)
"$PY" -c "import deepspeed" 2>/dev/null && strategies+=(zero3)
config_of() { case $1 in ddp) echo ddp.yaml ;; fsdp) echo fsdp.yaml ;; zero3) echo deepspeed_zero3.yaml ;; esac; }
methods=("4bit" "none")
if [ "${SMOKE:-0}" = 1 ]; then
  MODEL=demo NPROC=2 LEN=128 STEPS=2 strategies=(ddp fsdp) methods=("none")
  config_of() { case $1 in ddp) echo cpu_2proc.yaml ;; fsdp) echo cpu_2proc_fsdp.yaml ;; esac; }
fi
log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$OUT/check.log"; }
log "multi-GPU check: $MODEL on $NPROC processes, strategies ${strategies[*]}, quantization ${methods[*]}"
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
port=29650
for strategy in "${strategies[@]}"; do
  for quant in "${methods[@]}"; do
    name="mg-$strategy-$quant-$(date +%H%M%S)"
    sets=(--set quantization="$quant" --set strategy="$strategy" --set max_length="$LEN" --set logging_steps=1
          --set eval_steps=0 --set per_device_train_batch_size=1 --set gradient_accumulation_steps=2
          --set gradient_checkpointing=true --set resize_micro_batch=false --set num_gpus="$NPROC")
    "$PY" -m finetune.cli estimate --model "$MODEL" "${sets[@]}" --json >"$OUT/$name.estimate.json" 2>"$OUT/$name.estimate.err"
    log "train $name ($(config_of "$strategy"))"
    timeout 1200 accelerate launch --config_file "accelerate_configs/$(config_of "$strategy")" \
      --num_processes "$NPROC" --main_process_port $((port++)) \
      -m finetune.cli train --model "$MODEL" --max-steps "$STEPS" --quiet --name "$name" "${sets[@]}" \
      >"$OUT/$name.out" 2>"$OUT/$name.err"
    log "exit $? ($name)"
  done
done
"$PY" - "$OUT" "$FINETUNE_WORKSPACE" <<'PY' | tee "$OUT/table.md"
import json, re, sys
from pathlib import Path

out, workspace = Path(sys.argv[1]), Path(sys.argv[2])
print("| run | estimate per GPU (allocated) | measured max allocated, rank 0 | rank shares | adapter loads |")
print("|---|---|---|---|---|")
for est_file in sorted(out.glob("mg-*.estimate.json")):
    name = est_file.name[: -len(".estimate.json")]
    try:
        text = est_file.read_text()
        est = json.loads(text[text.index("{") :])  # a library may print a line before the JSON
        estimate = f"{est['per_gpu_gb']:.2f} GB ({est['allocated_gb']:.2f})"
    except Exception:
        estimate = "-"
    run = workspace / "runs" / name
    metrics = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if l.strip()] if (run / "metrics.jsonl").is_file() else []
    peaks = [m.get("cuda_mem_allocated_gb") for m in metrics if m.get("cuda_mem_allocated_gb") is not None]
    measured = f"{max(peaks):.2f} GB" if peaks else "-"
    err = (out / f"{name}.err").read_text(errors="replace") if (out / f"{name}.err").is_file() else ""
    shares = sorted(set(re.findall(r"sharding: rank (\d+) of \d+ holds [\d,]+ of [\d,]+ parameters \((\d+%)\)", err)))
    loads = "-"
    if (run / "adapter" / "adapter_config.json").is_file():
        try:
            from peft import AutoPeftModelForCausalLM

            AutoPeftModelForCausalLM.from_pretrained(str(run / "adapter"), device_map="cpu")
            loads = "yes"
        except Exception as exc:
            loads = f"no: {str(exc)[:80]}"
    state = json.loads((run / "status.json").read_text()).get("state") if (run / "status.json").is_file() else "no run"
    print(f"| {name} ({state}) | {estimate} | {measured} | {', '.join(f'r{r} {s}' for r, s in shares) or '-'} | {loads} |")
PY
log "done: $OUT/table.md"
