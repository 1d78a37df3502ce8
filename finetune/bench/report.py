"""The benchmark's result as text: a terminal table and a Markdown report."""

from __future__ import annotations

from typing import Any


def _fmt(value, spec: str = ",.0f", none: str = "-") -> str:
    return format(value, spec) if isinstance(value, (int, float)) else none


def _mem(result: dict[str, Any], value) -> str:
    return f"{value:.3f} GB" if isinstance(value, (int, float)) else "-"


def rows(result: dict[str, Any]) -> list[list[str]]:
    header = ["variant", "tokens/s", "x baseline", "tokens/CPU-s", "step (s)", "peak mem", "padding", "MFU"]
    out = [header]
    for v in result["variants"]:
        out.append(
            [
                v["name"],
                _fmt(v["tokens_per_s"]),
                _fmt(v["ratio_vs_baseline"], ".2f") + "x" if v["ratio_vs_baseline"] else "-",
                _fmt(v["cpu_tokens_per_s"]) if result["device"] == "cpu" else "-",
                _fmt(v["step_time_s"], ".3f"),
                _mem(result, v["peak_mem_gb"]),
                _fmt(100 * v["padding_fraction"], ".0f") + "%" if v["padding_fraction"] is not None else "-",
                _fmt(100 * v["mfu"], ".1f") + "%" if v["mfu"] is not None else "-",
            ]
        )
    return out


def table(result: dict[str, Any]) -> str:
    grid = rows(result)
    widths = [max(len(r[i]) for r in grid) for i in range(len(grid[0]))]
    lines = []
    for n, r in enumerate(grid):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def text(result: dict[str, Any]) -> str:
    s = result["settings"]
    head = [
        f"finetune bench: {result['model']} on {result['machine']['summary']}",
        f"settings: max_length {s['max_length']}, batch {s['per_device_train_batch_size']} x "
        f"{s['gradient_accumulation_steps']} accumulation, {s['quantization']} {s['method']} r={s['lora_r']}, "
        f"{s['steps']} measured steps after {s['warmup']} warm-up, median of {s['repeats']} interleaved repeats",
        f"data: {data_line(result)}",
    ]
    if result["device"] == "cpu":
        head.append(f"torch threads: {result['threads']} ({result['threads_reason']})")
    head.append(result["fast_path"] and "engine " + _fast_line(result) or "")
    ratio = result["ratio"]
    tail = f"\nengine / baseline real tokens per second: {ratio:.2f}x" if ratio else ""
    return "\n".join(head) + "\n\n" + table(result) + tail


def data_line(result: dict[str, Any]) -> str:
    d = result["data"]
    t = d.get("token_lengths") or {}
    span = f"{t.get('min')}-{t.get('max')} tokens (mean {t.get('mean')})" if t else "?"
    return f"{d['file']}, {d['rows']} rows of {span}, loss on {d['loss_mode']}"


def features(result: dict[str, Any]) -> list[str]:
    """One line per ablation: how the engine compares with the variant that switches one feature."""
    out = []
    for v in result["variants"][2:]:
        r = v.get("ratio_vs_engine")
        if not r:
            continue
        side = "engine" if v["kind"] == "engine" else "baseline"
        ref = result["engine_tokens_per_s"] if side == "engine" else result["baseline_tokens_per_s"]
        ratio = ref / v["tokens_per_s"] if v["tokens_per_s"] else None
        if ratio:
            out.append(f"{v['name']}: {side} is {ratio:.2f}x this variant's tokens/s ({v['about'] or 'one switch'})")
    return out


def _fast_line(result: dict[str, Any]) -> str:
    f = result["fast_path"]
    return (
        f"fast path: attention {f['attn_implementation']}, packing {'on' if f['packing'] else 'off'}, "
        f"batches {f['train_sampling_strategy']}, gradient checkpointing {'on' if f['gradient_checkpointing'] else 'off'}"
        f", liger {'on' if f['use_liger_kernel'] else 'off'}"
    )


def markdown(result: dict[str, Any], title: str = "Benchmark: engine vs plain TRL") -> str:
    m, v, s = result["machine"], result["versions"], result["settings"]
    lines = [f"# {title}", "", "Command:", "", "```", result["command"], "```", ""]
    lines.append(f"- machine: {m['summary']}; CPU: {m.get('cpu') or '?'}; nproc {m['nproc']}, RAM {m['ram_gb']} GB")
    if result["device"] == "cpu":
        lines.append(f"- torch threads: {result['threads']} ({result['threads_reason']})")
    lines.append("- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()))
    lines.append(
        f"- settings: max_length {s['max_length']}, per-device batch {s['per_device_train_batch_size']}, "
        f"gradient accumulation {s['gradient_accumulation_steps']}, {s['quantization']} {s['method']} "
        f"r={s['lora_r']}; {s['steps']} measured optimizer steps after {s['warmup']} warm-up step(s); "
        f"median of {s['repeats']} repeats, engine and baseline interleaved in one process"
    )
    lines.append(f"- data: {data_line(result)}")
    lines.append(f"- engine {_fast_line(result)}")
    lines.append(f"- memory: {result['memory_metric']}; total wall time {result['wall_s']} s")
    lines += ["", "| " + " | ".join(rows(result)[0]) + " |", "|" + "---|" * len(rows(result)[0])]
    for r in rows(result)[1:]:
        lines.append("| " + " | ".join(r) + " |")
    ratio = result["ratio"]
    lines += ["", f"**engine / baseline (real tokens per second): {ratio:.2f}x**" if ratio else ""]
    if result.get("cpu_time_ratio"):
        lines.append(f"(per CPU-second of the process: {result['cpu_time_ratio']:.2f}x)")
    per_feature = features(result)
    if per_feature:
        lines += ["", "Per feature (each row switches one thing relative to the engine or the baseline):", ""]
        lines += [f"- {line}" for line in per_feature]
    return "\n".join(lines) + "\n"
