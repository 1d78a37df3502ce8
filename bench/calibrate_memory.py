"""Calibrate `finetune.plan.estimate_memory` against measured training peaks.

For each grid point: build a model from a bundled config shape with random weights (layers
cut down where a CPU would take too long; the table says so), set it up the way the engine
does (bnb NF4 + double quantization, PEFT LoRA, TRL's fused LM-head loss, TRL's bf16 cast of
adapters on quantized models, non-reentrant gradient checkpointing, AdamW), run one tiny
warm-up step (so optimizer states and lazy buffers exist), then one measured step.

Measured:
- CPU: peak resident set size (VmHWM, reset after the warm-up via /proc/self/clear_refs)
  minus the RSS right after the imports, in a process forked per grid point. glibc is set to
  return blocks >= 64 KiB to the OS on free (mallopt M_MMAP_THRESHOLD), so RSS tracks live
  tensors rather than heap fragmentation (`--malloc default` measures without that).
- CUDA: torch.cuda.max_memory_allocated() after a reset of the peak stats (no CUDA context), every
  row in this one process (CUDA cannot be used in a forked child), memory released between rows.

Usage: python bench/calibrate_memory.py [--device cpu|cuda] [--quick | --full-grid] [--out bench/results]
       python bench/calibrate_memory.py --from-json bench/results/memory_calibration_cpu.json
         (re-estimate earlier measurements after changing the estimate; no training)
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CACHE = Path(tempfile.gettempdir()) / "finetune-calibration-models"
BASE = {
    "quantization": "4bit",
    "batch": 1,
    "seq": 128,
    "rank": 8,
    "checkpointing": False,
    "method": "lora",
    "targets": "all-linear",
    "dropout": 0.05,
    "objective": "sft",
}


def grid(quick: bool = False, full: bool = False) -> list[dict]:
    """Grid on a cut-down Qwen2.5-0.5B (4bit/none x batch 1/4 x seq 128/512 x checkpointing on/off at
    rank 8; rank 64 at the largest batch x seq, or everywhere with `full`), plus one row per real
    shape and a few other knobs. The default runs in about 10 minutes on 2 idle cores."""
    rows = []
    small = {"shape": "qwen2.5-0.5b", "layers": 4}
    for quant in ("4bit", "none"):
        for batch in (1, 4):
            for seq in (128, 512):
                for rank in (8, 64):
                    for ckpt in (True, False):
                        if rank == 64 and not full and (batch, seq) != (4, 512):
                            continue
                        if quick and (rank == 64 or seq == 512):
                            continue
                        row = {"quantization": quant, "batch": batch, "seq": seq, "rank": rank, "checkpointing": ckpt}
                        rows.append({**BASE, **small, **row})
    extra = [
        {"shape": "demo", "layers": None, "batch": 8, "seq": 256},
        {"shape": "qwen2.5-0.5b", "layers": None},
        {"shape": "llama-3.2-1b", "layers": 2},
        {"shape": "mistral-7b", "layers": 2},
        {"shape": "llama-3.1-8b", "layers": 2},
        {"shape": "qwen2.5-0.5b", "layers": 4, "batch": 4, "seq": 256, "method": "full", "quantization": "none"},
        {"shape": "qwen2.5-0.5b", "layers": 4, "batch": 4, "seq": 256, "dropout": 0.0},
        {"shape": "qwen2.5-0.5b", "layers": 4, "batch": 4, "seq": 256, "targets": "attention"},
    ]
    if quick:
        extra = extra[:2]
    return rows + [{**BASE, **row} for row in extra]


def preference_rows() -> list[dict]:
    """DPO rows (`--objective dpo` runs only these and their SFT twins at twice the batch): the policy
    runs chosen and rejected together, after a no-grad reference pass with the adapter disabled."""
    rows = []
    for quant in ("4bit", "none"):
        for ckpt in (False, True):
            for objective in ("dpo", "sft"):
                batch = 2 if objective == "dpo" else 4
                rows.append(
                    {**BASE, "shape": "qwen2.5-0.5b", "layers": 4, "quantization": quant, "batch": batch,
                     "seq": 256, "checkpointing": ckpt, "objective": objective, "pair": True}
                )  # fmt: skip
    return rows


# --- measuring (runs in the forked child) ---------------------------------------------------


def _status_kb(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+)", text).group(1))


def _trim() -> None:
    """Give freed heap memory back to the OS so RSS reflects live memory."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def _model_dir(row: dict) -> Path:
    """Save the (cut-down) random model once per shape, in bf16, and reuse it."""
    from finetune.demo import demo_model_path
    from finetune.plan.shapes import bundled_shapes

    if row["shape"] == "demo":
        return demo_model_path(CACHE / "workspace")
    target = CACHE / f"{row['shape']}-L{row['layers'] or 'all'}"
    if (target / "config.json").is_file():
        return target
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    data = json.loads(bundled_shapes()[row["shape"]].read_text())
    data = {k: v for k, v in data.items() if not k.startswith("_")}
    if row["layers"]:
        data["num_hidden_layers"] = row["layers"]
    config = AutoConfig.for_model(**data)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(target)
    return target


def _load(row: dict, device: str):
    """Load the model as the engine does: NF4 double-quant or plain, fp32 on CPU / bf16 on CUDA."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    kwargs = {"dtype": dtype, "device_map": device if device == "cpu" else {"": 0}}
    if row["quantization"] == "4bit":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
    return AutoModelForCausalLM.from_pretrained(_model_dir(row), **kwargs)


def _prepare(model, row: dict):
    """LoRA/full setup, TRL's fused LM head and bf16 adapter cast, checkpointing."""
    import torch
    from peft import LoraConfig, get_peft_model
    from trl.trainer.utils import add_fused_lm_head

    if row["method"] != "full":
        targets = "all-linear" if row["targets"] == "all-linear" else ["q_proj", "k_proj", "v_proj", "o_proj"]
        lora = LoraConfig(
            r=row["rank"],
            lora_alpha=2 * row["rank"],
            lora_dropout=row["dropout"],
            target_modules=targets,
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lora)
        if row["quantization"] != "none":
            for name, param in model.named_parameters():
                if param.requires_grad and "lora_magnitude_vector" not in name:
                    param.data = param.data.to(torch.bfloat16)
    add_fused_lm_head(
        model.get_base_model() if row["method"] != "full" else model, outputs=("log_probs", "entropy", "is_top1")
    )
    if row["checkpointing"]:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.train()
    return model


def _batch(row: dict, vocab: int, device: str, batch: int, seq: int):
    """Random tokens; with batch > 1 the last row is a quarter padding, as SFT batches are."""
    import torch

    ids = torch.randint(0, vocab, (batch, seq), device=device)
    mask = torch.ones_like(ids)
    if batch > 1:
        mask[-1, -max(1, seq // 4) :] = 0
    labels = ids.masked_fill(mask == 0, -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _dpo_loss(model, inputs: dict):
    """TRL's DPO step for memory: a no-grad reference pass (the adapter disabled) over the concatenated
    chosen + rejected batch, then the policy pass over it with grad, sigmoid loss on summed log-probs."""
    import contextlib

    import torch

    reference = model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()
    with torch.no_grad(), reference:
        ref = model(**inputs, fused_lm_head=True).log_probs.sum(-1)
    logps = model(**inputs, fused_lm_head=True).log_probs.sum(-1)
    chosen, rejected = (logps - ref).chunk(2)
    return -torch.nn.functional.logsigmoid(0.1 * (chosen - rejected)).mean()


def _step(model, optimizer, inputs: dict, device: str, objective: str = "sft") -> float:
    import torch

    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else torch.autocast("cpu", enabled=False)
    with ctx:
        loss = _dpo_loss(model, inputs) if objective == "dpo" else model(**inputs, fused_lm_head=True).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def measure(row: dict, device: str) -> dict:
    """Run the grid point; return measured GiB and timings."""
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    _trim()
    base_rss = _status_kb("VmRSS") * 1024
    start = time.time()
    model = _prepare(_load(row, device), row)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    vocab = model.config.vocab_size
    objective = row.get("objective", "sft")
    sequences = 2 if objective == "dpo" else 1  # a DPO pair is two sequences in one batch
    _step(model, optimizer, _batch(row, vocab, device, sequences, 16), device, objective)  # warm-up
    inputs = _batch(row, vocab, device, row["batch"] * sequences, row["seq"])
    _trim()
    loaded = _status_kb("VmRSS") * 1024 - base_rss
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        loaded = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")
    step_start = time.time()
    loss = _step(model, optimizer, inputs, device, objective)
    step_s = time.time() - step_start
    if device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        reserved = torch.cuda.max_memory_reserved()
    else:
        peak = _status_kb("VmHWM") * 1024 - base_rss
        reserved = None
    return {
        "measured_gb": peak / 2**30,
        "resident_before_step_gb": loaded / 2**30,
        "reserved_gb": None if reserved is None else reserved / 2**30,
        "loss": loss,
        "step_s": step_s,
        "total_s": time.time() - start,
    }


def run_forked(row: dict, device: str, malloc: str) -> dict:
    """Measure one row in a forked child (fresh peak counter, same imports already loaded)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_fd)
        try:
            if malloc == "fixed":
                libc = ctypes.CDLL("libc.so.6")
                libc.mallopt(-3, 65536)  # M_MMAP_THRESHOLD: big blocks are returned to the OS on free
                libc.mallopt(-1, 65536)  # M_TRIM_THRESHOLD
            result = measure(row, device)
        except Exception as exc:  # report, never hang the parent
            result = {"error": f"{type(exc).__name__}: {exc}"}
        os.write(write_fd, json.dumps(result).encode())
        os.close(write_fd)
        os._exit(0)
    os.close(write_fd)
    chunks = []
    while chunk := os.read(read_fd, 65536):
        chunks.append(chunk)
    os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    if not chunks:
        return {"error": f"child died (status {status}): out of memory?"}
    return json.loads(b"".join(chunks))


def run_inprocess(row: dict, device: str) -> dict:
    """Measure one row in this process (CUDA): the peak stats are reset per row, memory freed after."""
    import torch

    try:
        result = measure(row, device)
    except Exception as exc:  # report, keep going
        result = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    gc.collect()
    torch.cuda.empty_cache()
    return result


def ensure_models(rows: list[dict], fork: bool = True) -> None:
    """Write each needed random model once, in a throwaway child so the parent stays small (in this
    process when `fork` is False: forking a process with CUDA or thread pools started can hang)."""
    for key in sorted({(r["shape"], r["layers"] or 0) for r in rows}):
        row = {"shape": key[0], "layers": key[1]}
        if not fork:
            _model_dir(row)
            gc.collect()
            continue
        pid = os.fork()
        if pid == 0:
            try:
                _model_dir(row)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)


# --- estimating and reporting (parent) ----------------------------------------------------------


def row_config(row: dict):
    """The RunConfig a user would set for this grid point."""
    from finetune.config import RunConfig

    return RunConfig().replace(
        method=row["method"],
        quantization=row["quantization"],
        lora_r=row["rank"],
        lora_alpha=2 * row["rank"],
        lora_dropout=row["dropout"],
        lora_target_modules=row["targets"],
        per_device_train_batch_size=row["batch"],
        max_length=row["seq"],
        gradient_checkpointing=row["checkpointing"],
        optim="adamw_torch",
        # the rows are measured as padded batches of full-length rows, without Liger or re-batching
        packing=False,
        padding_free=False,
        resize_micro_batch=False,
        use_liger_kernel=False,
        objective=row.get("objective", "sft"),
    )


def row_estimate(row: dict, device: str):
    """The estimate of the row's plan, for the (cut-down) shape the row trains."""
    from finetune.plan import load_shape
    from finetune.plan.hardware import Machine
    from finetune.plan.planner import estimate

    shape = load_shape(row["shape"])
    if row["layers"]:
        shape.num_layers = row["layers"]
    return estimate(row_config(row), Machine.virtual(device, 80.0 if device == "cuda" else 0.0), model=shape)[1]


def describe(row: dict) -> str:
    layers = f"{row['layers']}L" if row["layers"] else "all layers"
    method = "full" if row["method"] == "full" else f"r{row['rank']}"
    extra = []
    if row["method"] != "full" and row["targets"] != "all-linear":
        extra.append(row["targets"])
    if row["dropout"] == 0:
        extra.append("dropout 0")
    if row.get("objective", "sft") != "sft":
        extra.append(f"{row['objective']} (b{row['batch']} pairs)")
    return (
        f"{row['shape']} ({layers}) | {row['quantization']} | {method}{' ' + ' '.join(extra) if extra else ''} | "
        f"b{row['batch']} x {row['seq']} | {'on' if row['checkpointing'] else 'off'}"
    )


def machine(device: str) -> dict:
    """What the numbers were measured on."""
    import bitsandbytes
    import peft
    import torch
    import transformers
    import trl

    cpu = "unknown"
    try:
        cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text()).group(1)
    except (OSError, AttributeError):
        pass
    info = {
        "device": device,
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "trl": trl.__version__,
        "bitsandbytes": bitsandbytes.__version__,
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def write_report(
    results: list[dict], info: dict, out: Path, malloc: str, elapsed: float, notes: list[str] | None = None
) -> Path:
    """Markdown table + JSON next to it; `notes` become a Notes section."""
    out.mkdir(parents=True, exist_ok=True)
    stem = f"memory_calibration_{info['device']}"
    payload = {"machine": info, "malloc": malloc, "elapsed_s": elapsed, "notes": notes or [], "rows": results}
    (out / f"{stem}.json").write_text(json.dumps(payload, indent=1))
    ok = [r for r in results if "error" not in r]
    within = sum(abs(r["error_pct"]) <= 15 for r in ok)
    how = (
        "peak RSS (VmHWM, reset after a warm-up step) minus RSS after imports, one forked process per row"
        + (", glibc mmap threshold fixed at 64 KiB" if malloc == "fixed" else ", default glibc malloc")
        if info["device"] == "cpu"
        else "torch.cuda.max_memory_allocated() after reset_peak_memory_stats()"
    )
    lines = [
        f"# Memory calibration ({info['device']})",
        "",
        f'Estimate: `finetune.plan.planner.estimate(..., Machine.virtual("{info["device"]}"))`, `allocated_gb` '
        "(the estimate without CUDA context/allocator slack; on CPU it includes a 0.05 GB runtime term).",
        f"Measured: {how}. Each row trains one step after a 16-token warm-up step; LoRA alpha = 2r, "
        "dropout 0.05 unless noted, all-linear targets, AdamW, TRL fused LM-head loss. "
        "`nL` = model cut to n layers (real hidden size, heads and vocabulary).",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['ram_gb']} GB RAM"
        + (f", {info['gpu']}" if "gpu" in info else "")
        + f"; torch {info['torch']}, transformers {info['transformers']}, peft {info['peft']}, "
        f"trl {info['trl']}, bitsandbytes {info['bitsandbytes']}. Total time {elapsed / 60:.1f} min.",
        "",
        f"**{within} of {len(ok)} rows within 15%**"
        + (f"; {len(results) - len(ok)} rows failed" if len(ok) < len(results) else "")
        + ".",
        "",
        "| model | quant | method | batch x seq | ckpt | estimate GB | measured GB | error % "
        "| resident before step est / meas GB | step s |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['settings']} | failed: {r['error']} | | | | |")
            continue
        flag = "" if abs(r["error_pct"]) <= 15 else " **miss**"
        lines.append(
            f"| {r['settings']} | {r['estimate_gb']:.3f} | {r['measured_gb']:.3f} | "
            f"{r['error_pct']:+.1f}{flag} | {r['estimate_resident_gb']:.3f} / {r['resident_before_step_gb']:.3f} | "
            f"{r['step_s']:.1f} |"
        )
    lines += ["", "Error % = (estimate - measured) / measured. Positive means the estimate is conservative.", ""]
    if notes:
        lines += ["## Notes", ""] + [f"- {note}" for note in notes] + [""]
    path = out / f"{stem}.md"
    path.write_text("\n".join(lines))
    return path


def _entry(row: dict, result: dict, device: str) -> dict:
    """One report row: the measurement next to the current estimate."""
    estimate = row_estimate(row, device)
    b = estimate.breakdown
    resident = sum(
        b.get(k, 0.0) for k in ("base_weights", "adapter_weights", "gradients", "optimizer_states", "runtime")
    )
    entry = {
        **result,
        "settings": describe(row),
        "row": row,
        "estimate_gb": estimate.allocated_gb,
        "estimate_resident_gb": resident,
        "breakdown": b,
    }
    if "error" not in result:
        entry["error_pct"] = 100 * (estimate.allocated_gb - result["measured_gb"]) / result["measured_gb"]
    return entry


def reestimate(path: Path, out: Path, notes: list[str] | None = None) -> int:
    """Rewrite the report of an earlier run with the current estimate (no re-measuring)."""
    data = json.loads(path.read_text())
    info = data["machine"]
    keep = ("measured_gb", "resident_before_step_gb", "reserved_gb", "loss", "step_s", "total_s", "error")
    results = [_entry(r["row"], {k: r[k] for k in keep if k in r}, info["device"]) for r in data["rows"]]
    elapsed = data.get("elapsed_s") or sum(r.get("total_s", 0) for r in data["rows"])
    notes = notes if notes is not None else data.get("notes")
    print(f"wrote {write_report(results, info, out, data.get('malloc', 'fixed'), elapsed, notes)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--quick", action="store_true", help="a handful of rows (smoke test)")
    parser.add_argument("--full-grid", action="store_true", help="rank 64 at every grid point (about twice as long)")
    parser.add_argument("--malloc", choices=("fixed", "default"), default="fixed")
    parser.add_argument("--only", type=int, nargs="*", help="row indices to run")
    parser.add_argument(
        "--objective", choices=("all", "dpo"), default="all", help="dpo: only the DPO rows and their SFT twins"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--from-json", type=Path, help="re-estimate the measured rows of an earlier run's JSON")
    parser.add_argument("--note", action="append", help="a line for the report's Notes section (repeatable)")
    args = parser.parse_args(argv)
    os.environ["FINETUNE_WORKSPACE"] = str(CACHE / "workspace")
    if args.from_json:
        return reestimate(args.from_json, args.out, args.note)
    import bitsandbytes  # noqa: F401  (loaded once before forking)
    import peft  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401
    import trl.trainer.utils  # noqa: F401

    rows = grid(args.quick, args.full_grid)
    if args.objective == "dpo":
        rows = preference_rows()
    if args.only:
        rows = [rows[i] for i in args.only]
    cuda = args.device == "cuda"
    ensure_models(rows, fork=not cuda)
    started, results = time.time(), []
    for index, row in enumerate(rows):
        result = run_inprocess(row, args.device) if cuda else run_forked(row, args.device, args.malloc)
        entry = _entry(row, result, args.device)
        estimate_gb = entry["estimate_gb"]
        if "error" not in result:
            print(
                f"[{index + 1}/{len(rows)}] {entry['settings']}: estimate {estimate_gb:.3f} GB, "
                f"measured {result['measured_gb']:.3f} GB ({entry['error_pct']:+.1f}%), {result['total_s']:.0f}s",
                flush=True,
            )
        else:
            print(f"[{index + 1}/{len(rows)}] {entry['settings']}: {entry['error']}", flush=True)
        results.append(entry)
    path = write_report(results, machine(args.device), args.out, args.malloc, time.time() - started, args.note)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
