"""The benchmark's result as text: a terminal table and a Markdown report."""

from __future__ import annotations

from typing import Any


def _fmt(value, spec: str = ",.0f", none: str = "-") -> str:
    return format(value, spec) if isinstance(value, (int, float)) else none


def _mem(result: dict[str, Any], value) -> str:
    return f"{value:.3f} GB" if isinstance(value, (int, float)) else "-"


def rows(result: dict[str, Any]) -> list[list[str]]:
    header = ["variant", "tokens/s", "x TRL defaults", "tokens/CPU-s", "step (s)", "peak mem", "padding", "MFU"]
    out = [header]
    for v in result["variants"]:
        if v.get("error") and not v.get("tokens_per_s"):
            out.append([v["name"], v["error"][:60]] + ["-"] * (len(header) - 2))
            continue
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
    head.append("engine " + _plan_line(result))
    tail = "\n" + "\n".join(_ratio_lines(result))
    return "\n".join(head) + "\n\n" + table(result) + tail


def data_line(result: dict[str, Any]) -> str:
    d = result["data"]
    t = d.get("token_lengths") or {}
    span = f"{t.get('min')}-{t.get('max')} tokens (mean {t.get('mean')})" if t else "?"
    return f"{d['file']}, {d['rows']} rows of {span}, loss on {d['loss_mode']}"


def features(result: dict[str, Any]) -> list[str]:
    """One line per ablation: how the engine compares with the variant that switches one feature."""
    out = []
    for v in result["variants"]:
        r = v.get("ratio_vs_engine")
        if not r or v["kind"] not in ("engine", "trl") or v["name"] in ("engine", "TRL defaults"):
            continue
        side = "engine" if v["kind"] == "engine" else "TRL defaults"
        ref = result["engine_tokens_per_s"] if side == "engine" else result["baseline_tokens_per_s"]
        ratio = ref / v["tokens_per_s"] if v["tokens_per_s"] else None
        if ratio:
            out.append(f"{v['name']}: {side} is {ratio:.2f}x this variant's tokens/s ({v['about'] or 'one switch'})")
    return out


def _plan_line(result: dict[str, Any]) -> str:
    p = result["plan"]
    batches = "bfd packing" if p["packing"] else "padding-free" if p["padding_free"] else p["train_sampling_strategy"]
    return (
        f"plan: {p['dtype']}, attention {p['attn_implementation']}, batches {batches}, micro-batch "
        f"{p['per_device_train_batch_size']} x {p['gradient_accumulation_steps']}, gradient checkpointing "
        f"{'on' if p['gradient_checkpointing'] else 'off'}, liger {'on' if p['use_liger_kernel'] else 'off'}"
    )


def _ratio_lines(result: dict[str, Any]) -> list[str]:
    out = []
    for key, name in (("ratio", "TRL defaults"), ("ratio_vs_seed", "the seed script"), ("ratio_vs_unsloth", "Unsloth")):
        if result.get(key):
            out.append(f"engine / {name} (real tokens per second): {result[key]:.2f}x")
    return out


def markdown(result: dict[str, Any], title: str = "Benchmark: engine vs TRL's defaults") -> str:
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
        f"median of {s['repeats']} repeats, every arm interleaved in one process (Unsloth in a child process)"
    )
    lines.append(f"- data: {data_line(result)}")
    lines.append(f"- engine {_plan_line(result)}")
    lines.append(f"- memory: {result['memory_metric']}; total wall time {result['wall_s']} s")
    lines += ["", "| " + " | ".join(rows(result)[0]) + " |", "|" + "---|" * len(rows(result)[0])]
    for r in rows(result)[1:]:
        lines.append("| " + " | ".join(r) + " |")
    lines += [""] + [f"**{line}**" for line in _ratio_lines(result)]
    if result.get("cpu_time_ratio"):
        lines.append(f"(per CPU-second of the process: {result['cpu_time_ratio']:.2f}x)")
    per_feature = features(result)
    if per_feature:
        lines += ["", "Per feature (each row switches one thing relative to the engine or TRL's defaults):", ""]
        lines += [f"- {line}" for line in per_feature]
    return "\n".join(lines) + "\n"
