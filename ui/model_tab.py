"""Model & memory tab: base model, method, memory preset, live VRAM estimate, every knob, YAML.

Engine calls (all through the Studio): presets, apply_preset, estimate (the plan and its memory),
train_command, save_config; finetune.config (RunConfig, field_help via ui.config_form). The Advanced form built here is
the config every other tab reads and writes. Handlers are module-level functions returning updates keyed by
component name (`ui.state.connect`); `FORM` stands for every field of the form, in order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from finetune.config import RunConfig
from finetune.errors import ConfigError, FinetuneError
from finetune.studio import source_label
from ui import charts, config_form, grpo_view, time_view
from ui.state import FORM, Ctx, connect, error_text, md_error, md_escape

MODELS = [
    "demo",
    "Qwen/Qwen2.5-0.5B-Instruct",
    "Qwen/Qwen2.5-1.5B-Instruct",
    "Qwen/Qwen3-0.6B",
    "meta-llama/Llama-3.2-1B-Instruct",
    "HuggingFaceTB/SmolLM2-1.7B-Instruct",
    "microsoft/Phi-3.5-mini-instruct",
    "mistralai/Mistral-7B-Instruct-v0.3",
    "meta-llama/Llama-3.1-8B-Instruct",
]
METHODS = {
    "QLoRA 4-bit": ("lora", "4bit"),
    "LoRA 8-bit": ("lora", "8bit"),
    "LoRA 16-bit": ("lora", "none"),
    "DoRA": ("dora", None),  # keeps the quantization chosen (QDoRA with 4bit)
    "Full fine-tune": ("full", "none"),
}
OBJECTIVES = {"SFT": "sft", "DPO": "dpo", "ORPO": "orpo", "KTO": "kto", "GRPO": "grpo"}
FRESH_ADAPTER = "(a fresh adapter)"
TRUST_REMOTE_CODE_WARNING = (
    "⚠ **trust_remote_code is on**: Python code from the model repository will run on this machine with "
    "your permissions. Only keep it on for repositories you trust."
)


def method_label(method: str, quantization: str) -> str:
    if method == "full":
        return "Full fine-tune"
    if method == "dora":
        return "DoRA"
    return {"4bit": "QLoRA 4-bit", "8bit": "LoRA 8-bit"}.get(quantization, "LoRA 16-bit")


def objective_label(objective: str) -> str:
    return next((label for label, value in OBJECTIVES.items() if value == objective), "SFT")


def start_choices(ctx: Ctx) -> list[str]:
    """A fresh adapter, or the finished runs with an adapter to continue (e.g. DPO after SFT)."""
    try:
        return [FRESH_ADAPTER, *ctx.studio.run_names(with_adapter=True)]
    except Exception:
        return [FRESH_ADAPTER]


def preset_choices(ctx: Ctx) -> list[tuple[str, str]]:
    try:
        return [(p.name, p.name) for p in ctx.studio.presets()]
    except Exception:
        return []


def preset_info(ctx: Ctx, name: str | None) -> str:
    if not name:
        return "No preset: the settings below are RunConfig's defaults."
    try:
        for p in ctx.studio.presets():
            if p.name == name:
                need = f" · sized for about {p.min_gpu_gb:g} GB of GPU memory" if getattr(p, "min_gpu_gb", None) else ""
                hint = f"  \nModels: {md_escape(p.model_hint)}" if getattr(p, "model_hint", "") else ""
                return f"**{md_escape(p.name)}**: {md_escape(p.description)}{need}{hint}"
    except Exception as exc:
        return md_error(exc, "Presets unavailable")
    return f"Unknown preset {md_escape(name)}"


def hardware_md(ctx: Ctx) -> str:
    studio = ctx.studio
    if studio.hardware is None:
        return f"**Hardware:** unknown ({md_escape(studio.hardware_error or 'detection failed')})"
    try:
        summary = studio.hardware.summary()
    except Exception as exc:
        summary = error_text(exc)
    preset = studio.suggested_preset
    suggestion = f" · suggested preset: **{md_escape(preset)}**" if preset else ""
    return f"**Hardware:** {md_escape(summary)}{suggestion}"


def estimate(ctx: Ctx, cfg: RunConfig, calibrate: bool = True) -> tuple[str, Any]:
    """(verdict Markdown with the predicted time, breakdown figure); never raises: a failed estimate says why."""
    studio = ctx.studio
    try:
        est = studio.estimate(cfg)
    except Exception as exc:
        return (
            md_error(error_text(exc), f"Cannot estimate memory for {cfg.model_name_or_path}"),
            charts.empty_figure("Estimated memory", "No estimate for these settings"),
        )
    total = float(est.total_gb)
    on_cpu = studio.device == "cpu"
    capacity = studio.capacity_gb()
    where = "GPU memory" if not on_cpu else "system RAM (no GPU: training runs on the CPU)"
    gpus = int(getattr(est, "gpus", 1) or 1)
    if gpus > 1:  # a run planned for several GPUs: the estimate is each one's peak
        where = (
            f"per GPU ({est.strategy} over {gpus} GPUs)"
            if not on_cpu
            else f"per process ({est.strategy} over {gpus} CPU processes: no GPU on this machine)"
        )
    if capacity:
        verdict = est.verdict(capacity)
        icon = {"fits": "✔", "tight": "⚠"}.get(verdict, "✖")
        head = f"{icon} **{verdict.upper()}** — estimated peak **{total:.2f} GB** of {capacity:.0f} GB {where}"
    else:
        head = f"**Estimated peak: {total:.2f} GB** ({where}; capacity unknown)"
    notes = "".join(f"\n- {md_escape(n)}" for n in (est.notes or [])[:4])
    md = head + (f"  \n{notes}" if notes else "") + time_view.prediction_md(ctx, cfg, calibrate=calibrate)
    md += plan_table(est.plan)
    md += f"\n\n{md_escape(studio.checkpoints_line(cfg))}"  # how many checkpoints a run keeps, their size
    return md, charts.memory_breakdown_figure(dict(est.breakdown or {}), total, None if on_cpu else capacity)


def plan_table(plan: Any) -> str:
    """What `auto` decided for this machine, and why: the plan the run will train with."""
    if plan is None:
        return ""
    rows = "".join(f"\n| {name} | {md_escape(value)} | {md_escape(why)} |" for name, value, why in plan.decisions())
    return "\n\n**Plan: what auto decided before Start**\n\n| decision | value | why |\n|---|---|---|" + rows


PREFERENCE_SHAPES = ("preference", "unpaired_preference")


def config_summary(cfg: RunConfig, preset: str | None, data_shape: str | None = None) -> str:
    """The Train tab's "Start will train" line: model, method, objective, data (by the name the user gave
    it), length, steps, batch and learning rate; a warning when the data and the objective disagree."""
    data = source_label(cfg.dataset_path)
    steps = f"max_steps {cfg.max_steps}" if cfg.max_steps > 0 else f"{cfg.num_train_epochs:g} epochs"
    objective = objective_label(cfg.objective) + (f" (beta {cfg.beta:g})" if cfg.is_preference else "")
    if cfg.objective == "grpo":
        objective = f"GRPO (rewards: {md_escape(cfg.reward_functions)})"
    if cfg.start_from_run:
        objective += f" from the adapter of {md_escape(cfg.start_from_run)}"
    text = (
        f"**Start will train:** `{md_escape(cfg.model_name_or_path)}` · {method_label(cfg.method, cfg.quantization)} · "
        f"objective {objective} · "
        f"preset {md_escape(preset or 'none')} · data: {md_escape(data)} · max_length {cfg.max_length} · {steps} · "
        f"batch {cfg.per_device_train_batch_size}×{cfg.gradient_accumulation_steps} · lr {cfg.learning_rate:g}  \n"
        "Change these in the **Data** and **Model & memory** tabs."
    )
    if data_shape in PREFERENCE_SHAPES and not cfg.is_preference:
        text += (
            f"  \n⚠ The data holds **preference** examples (chosen/rejected or labelled answers), which "
            f"{objective_label(cfg.objective)} cannot train: pick **DPO**, **ORPO** or **KTO** as the Objective."
        )
    elif data_shape == "prompts" and cfg.objective != "grpo":
        text += "  \n⚠ The data holds **prompts** to be answered and rewarded: pick **GRPO** as the Objective."
    elif data_shape and data_shape not in PREFERENCE_SHAPES and cfg.is_preference:
        text += f"  \n⚠ {objective_label(cfg.objective)} needs preference data; the data chosen is {data_shape} data."
    elif data_shape and data_shape != "prompts" and cfg.objective == "grpo":
        text += f"  \n⚠ GRPO needs prompts (with answers for the answer rewards); the data chosen is {data_shape} data."
    return text + (f"  \n{TRUST_REMOTE_CODE_WARNING}" if cfg.trust_remote_code else "")


# --- layout ----------------------------------------------------------------------------------
def build(ctx: Ctx) -> None:
    c, base = ctx.c, ctx.base_config
    with gr.Row(equal_height=False):
        c["model_name"] = gr.Dropdown(
            choices=MODELS,
            value=base.model_name_or_path,
            allow_custom_value=True,
            label="Base model",
            info="A popular small instruct model, any Hub id or local folder (type it), or `demo` (offline, CPU, seconds).",
            elem_id="model-name",
            scale=3,
        )
        c["method"] = gr.Radio(
            choices=list(METHODS),
            value=method_label(base.method, base.quantization),
            label="Method",
            elem_id="model-method",
            scale=3,
            info="QLoRA trains a small adapter on a 4-bit base: the least memory.",
        )
    with gr.Row(equal_height=False):
        c["objective"] = gr.Radio(
            choices=list(OBJECTIVES),
            value=objective_label(base.objective),
            label="Objective",
            elem_id="model-objective",
            scale=3,
            info="SFT imitates answers; DPO, ORPO and KTO learn preferences (chosen vs rejected, or good/bad) "
            "and need preference data; GRPO learns from reward functions on sampled answers (prompts data).",
        )
        c["start_from"] = gr.Dropdown(
            choices=start_choices(ctx),
            value=base.start_from_run or FRESH_ADAPTER,
            label="Start from",
            info="A fresh adapter, or a finished run's adapter to continue, e.g. DPO on top of an SFT run "
            "(run@step: one of its checkpoints).",
            elem_id="model-start-from",
            allow_custom_value=True,  # run@step from the Test tab's checkpoint curve
            scale=3,
        )
    grpo_view.build_model(ctx)  # the reward functions and their weights, shown for GRPO
    with gr.Row(equal_height=False):
        c["preset"] = gr.Dropdown(
            choices=preset_choices(ctx),
            value=ctx.studio.suggested_preset,
            label="Memory preset",
            info="Fills batch size, length, precision… for a memory budget.",
            elem_id="model-preset",
            scale=2,
        )
        c["preset_md"] = gr.Markdown(preset_info(ctx, ctx.studio.suggested_preset), elem_id="model-preset-info")
    c["hardware_md"] = gr.Markdown(hardware_md(ctx), elem_id="model-hardware")
    time_view.build_price(ctx)
    md, fig = estimate(ctx, base, calibrate=False)  # the page's first refresh measures an uncalibrated CPU
    with gr.Row(equal_height=False):
        with gr.Column(scale=2):
            c["estimate_md"] = gr.Markdown(md, elem_id="model-estimate")
        with gr.Column(scale=3):
            c["estimate_plot"] = gr.Plot(fig, show_label=False, elem_id="model-estimate-plot")
    with gr.Accordion("Advanced: every setting", open=False, elem_id="advanced"):
        gr.Markdown(
            "Every knob of the run, with its help text. Presets, the Data tab and loaded YAML files fill "
            "these fields; Start uses exactly what is here."
        )
        ctx.fields.update(config_form.build_form(base))
    with gr.Row(equal_height=True):
        c["yaml_save_btn"] = gr.Button("Save config as YAML", elem_id="yaml-save-btn")
        c["yaml_upload"] = gr.UploadButton("Load a config (YAML)…", file_types=[".yaml", ".yml"], elem_id="yaml-upload")
    c["reset_btn"] = gr.Button("Reset every setting to the defaults", size="sm", elem_id="config-reset-btn")
    c["yaml_file"] = gr.File(label="Saved config (download)", interactive=False, elem_id="yaml-file", visible=False)
    c["yaml_msg"] = gr.Markdown(elem_id="yaml-msg")
    c["command"] = gr.Code(
        ctx.studio.train_command(base, ctx.studio.suggested_preset),
        language="shell",
        label="Equivalent command line",
        interactive=False,
        elem_id="model-command",
        lines=4,
        wrap_lines=True,
    )


# --- handlers ------------------------------------------------------------------------------------
REFRESH_OUTPUTS = [
    "model_name",
    "method",
    "objective",
    "start_from",
    "data_max_length",
    "estimate_md",
    "estimate_plot",
    "command",
    "train_config_md",
    "train_msg",
    "saved_config",
]


def refresh(ctx: Ctx, preset, data_state, *values) -> dict[str, Any]:
    """Everything that follows the form: the quick pickers, the estimate and plan, the command line, the Train
    tab's summary, the settings this browser keeps; a stale "did not start" message is cleared."""
    try:
        cfg = config_form.config_from_values(values)
    except FinetuneError as exc:
        problem = md_error(exc, "These settings cannot be used")
        return {"estimate_md": problem, "train_config_md": problem}
    md, fig = estimate(ctx, cfg)
    if cfg.trust_remote_code:  # shown on this tab, next to the settings, for as long as it is on
        md = f"{TRUST_REMOTE_CODE_WARNING}\n\n{md}"
    return {
        "model_name": cfg.model_name_or_path,
        "method": method_label(cfg.method, cfg.quantization),
        "objective": objective_label(cfg.objective),
        "start_from": cfg.start_from_run or FRESH_ADAPTER,
        "data_max_length": cfg.max_length,
        "estimate_md": md,
        "estimate_plot": fig,
        "command": ctx.studio.train_command(cfg, preset),
        "train_config_md": config_summary(cfg, preset, (data_state or {}).get("shape"))
        + time_view.start_line(ctx, cfg),
        "train_msg": "",
        "saved_config": {"preset": preset, "config": cfg.to_dict()},
    }


REFRESH_INPUTS = ["preset", "data_state", FORM]


def set_model(ctx: Ctx, name) -> dict:
    name = (name or "").strip()
    if not name:
        gr.Warning("Type a Hub model id, a local folder, or pick one from the list.")
        return {}
    return {"f.model_name_or_path": name}


def warn_remote_code(ctx: Ctx, on) -> dict:
    if on:
        gr.Warning(TRUST_REMOTE_CODE_WARNING.replace("**", ""))
    return {}


def set_method(ctx: Ctx, label) -> dict:
    method, quant = METHODS.get(label, ("lora", "4bit"))
    return {"f.method": method} if quant is None else {"f.method": method, "f.quantization": quant}


def set_objective(ctx: Ctx, label) -> dict:
    return {"f.objective": OBJECTIVES.get(label, "sft")}


def set_start(ctx: Ctx, name) -> dict:
    return {"f.start_from_run": "" if not name or name == FRESH_ADAPTER else name}


def fresh_start_choices(ctx: Ctx) -> dict:
    return {"start_from": gr.Dropdown(choices=start_choices(ctx))}


def use_preset(ctx: Ctx, name, *values) -> dict:
    try:
        cfg = ctx.studio.apply_preset(config_form.config_from_values(values), name)
    except Exception as exc:
        gr.Warning(error_text(exc))
        return {"preset_md": md_error(exc, "Preset not applied")}
    gr.Info(f"Preset {name} applied")
    return {FORM: config_form.values_from_config(cfg), "preset_md": preset_info(ctx, name)}


def save_yaml(ctx: Ctx, *values) -> dict:
    try:
        cfg = config_form.config_from_values(values)
    except FinetuneError as exc:
        gr.Warning(error_text(exc))
        return {"yaml_file": gr.File(visible=False), "yaml_msg": md_error(exc, "Not saved")}
    problems = cfg.validate()
    path = ctx.studio.save_config(cfg)
    note = f"Saved **{path.name}** (download it above)."
    if problems:
        note += "\n\n" + md_error("\n".join(f"- {p}" for p in problems), "Note: Start will refuse these settings")
    gr.Info(f"Saved {path.name}")
    return {"yaml_file": gr.File(value=str(path), visible=True), "yaml_msg": note}


def load_yaml(ctx: Ctx, path, *values) -> dict:
    if not path:
        return {}
    name = Path(path).name
    try:
        current = config_form.config_from_values(values)
        cfg = RunConfig.from_yaml(path, base=current)
        problems = cfg.validate()
        if problems:
            raise ConfigError(problems)
    except FinetuneError as exc:
        text = error_text(exc).replace(str(path), name).replace(str(Path(path).parent) + "/", "")
        gr.Warning(f"{name} was not loaded: see the message under the upload box.")
        return {"yaml_msg": md_error(text, f"{name} was not loaded")}
    gr.Info(f"Loaded {name}")
    return {
        FORM: config_form.values_from_config(cfg),
        "yaml_msg": f"✔ Loaded **{md_escape(name)}**: every field below now shows its settings.",
        "data_max_length": cfg.max_length,
    }


def restore(ctx: Ctx, saved) -> dict:
    """Page (re)load: the settings this browser last had, when they are still valid."""
    if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
        return {}
    try:
        cfg = RunConfig.from_dict(saved["config"], base=ctx.base_config)
        if cfg.validate():
            raise ConfigError(cfg.validate())
    except FinetuneError:
        return {}
    preset = saved.get("preset") if saved.get("preset") in [v for _, v in preset_choices(ctx)] else None
    return {FORM: config_form.values_from_config(cfg), "preset": preset, "preset_md": preset_info(ctx, preset)}


def reset(ctx: Ctx) -> dict:
    gr.Info("Every setting is back to its default")
    preset = ctx.studio.suggested_preset
    return {
        FORM: config_form.values_from_config(ctx.base_config),
        "preset": preset,
        "preset_md": preset_info(ctx, preset),
    }


def wire(ctx: Ctx) -> None:
    c, f = ctx.c, ctx.fields
    quiet = {"api_visibility": "private", "show_progress": "hidden"}

    def chain(dep):
        """After `dep`, everything that follows the form (see `refresh`)."""
        return connect(ctx, dep.then, refresh, REFRESH_INPUTS, REFRESH_OUTPUTS, trigger_mode="always_last", **quiet)

    ctx.hooks["refresh"] = chain
    triggers = []
    for comp in ctx.field_list:  # text fields update when done (Enter or leaving the field), not per keystroke
        triggers += [comp.submit, comp.blur] if isinstance(comp, gr.Textbox) else [comp.input]
    connect(ctx, lambda fn, i, o, **kw: gr.on(triggers, fn, i, o, **kw), refresh, REFRESH_INPUTS, REFRESH_OUTPUTS,
            trigger_mode="always_last", **quiet)  # fmt: skip

    connect(ctx, f["trust_remote_code"].input, warn_remote_code, ["f.trust_remote_code"], [], **quiet)
    ctx.hooks["after_model"] = connect(ctx, c["model_name"].input, set_model, ["model_name"], ["f.model_name_or_path"],
                                       api_name="set_model", show_progress="hidden")  # fmt: skip
    chain(connect(ctx, c["method"].input, set_method, ["method"], ["f.method", "f.quantization"], api_name="set_method",
                  show_progress="hidden"))  # fmt: skip
    chain(connect(ctx, c["objective"].input, set_objective, ["objective"], ["f.objective"], api_name="set_objective",
                  show_progress="hidden"))  # fmt: skip
    # .select, not .input: Gradio's Dropdown fires `input` twice per pick
    chain(
        connect(ctx, c["start_from"].select, set_start, ["start_from"], ["f.start_from_run"], api_name="set_start_from")
    )
    # runs finish while the page is open: offer the current ones
    connect(ctx, c["start_from"].focus, fresh_start_choices, [], ["start_from"], api_visibility="private")
    # .select, not .input: Gradio 6.31's Dropdown fires `input` twice per pick (two runs, two toasts)
    chain(connect(ctx, c["preset"].select, use_preset, ["preset", FORM], [FORM, "preset_md"], api_name="apply_preset"))
    connect(ctx, c["yaml_save_btn"].click, save_yaml, [FORM], ["yaml_file", "yaml_msg"], api_name="save_config")
    ctx.hooks["after_restore"] = chain(connect(ctx, ctx.blocks.load, restore, ["saved_config"],
                                               [FORM, "preset", "preset_md"], api_visibility="private"))  # fmt: skip
    ctx.hooks["after_reset"] = chain(connect(ctx, c["reset_btn"].click, reset, [], [FORM, "preset", "preset_md"],
                                             api_name="reset_config"))  # fmt: skip
    ctx.hooks["after_yaml"] = chain(connect(ctx, c["yaml_upload"].upload, load_yaml, ["yaml_upload", FORM],
                                            [FORM, "yaml_msg", "data_max_length"], api_name="load_config"))  # fmt: skip
    time_view.wire_price(ctx)
