"""GRPO views: the reward functions with their weights (Model & memory tab), the sampled completions with
their rewards (Train tab), and a prompt row in the Data tab's preview.

Engine calls (through the Studio): rewards.functions / custom_note / notes / store_custom_file / samples /
sample_steps. The weights write the Advanced form's `reward_functions` field (the config Start reads); the
other reward knobs (pattern, target length, JSON keys, tolerance) and the generation settings are the
form's GRPO fields. The completions table polls on its own timer, only redrawing when a new sample is saved.
"""

from __future__ import annotations

import html
from typing import Any

import gradio as gr

from finetune.errors import FinetuneError
from ui import config_form
from ui.state import Ctx, error_text, md_escape

SAMPLES_POLL_S = 2.0
TABLE_HEADERS = ["row", "prompt", "completion", "answer", "reward"]
MAX_CELL = 400


# --- reward functions and weights (Model & memory tab) ----------------------------------------------
def weights_from_spec(spec: str, names: list[str]) -> list[float]:
    """The form's reward_functions text -> one weight per function (0: not used)."""
    weights = dict.fromkeys(names, 0.0)
    for part in (spec or "").replace(" ", ",").split(","):
        name, sep, weight = part.strip().partition(":")
        if name.strip().lower() in weights:
            try:
                weights[name.strip().lower()] = float(weight) if sep else 1.0
            except ValueError:
                weights[name.strip().lower()] = 1.0
    return list(weights.values())


def spec_from_weights(names: list[str], weights: list[Any]) -> str:
    """One weight per function -> reward_functions text (functions at 0 or empty left out)."""
    parts = []
    for name, weight in zip(names, weights):
        try:
            value = float(weight or 0)
        except (TypeError, ValueError):
            continue
        if value:
            parts.append(name if value == 1 else f"{name}:{value:g}")
    return ", ".join(parts)


def notes_md(ctx: Ctx, cfg=None) -> str:
    lines = [f"- {md_escape(n)}" for n in (ctx.studio.rewards.notes(cfg) if cfg is not None else [])]
    lines.append(f"- {md_escape(ctx.studio.rewards.custom_note())}")
    return "\n".join(lines)


def build_model(ctx: Ctx) -> None:
    """The GRPO panel under the objective: a weight per reward function, the notes, the custom file upload."""
    c, base = ctx.c, ctx.base_config
    functions = ctx.studio.rewards.functions()
    names = [name for name, _ in functions]
    weights = weights_from_spec(base.reward_functions, names)
    with gr.Group(visible=base.objective == "grpo") as panel:  # (a Group renders its elem_id twice)
        gr.Markdown(
            "**GRPO reward functions**: a weight for each (0 = not used); the reward is their weighted sum. "
            "Their settings (pattern, target length, JSON keys, tolerance) and the generation settings "
            "(num_generations, max_completion_length, temperature, kl_coef) are under *Advanced → GRPO*.",
            elem_id="grpo-intro",
        )
        c["grpo_weights"] = []
        for start in range(0, len(functions), 4):
            with gr.Row(equal_height=False):
                for name, help_text in functions[start : start + 4]:
                    c["grpo_weights"].append(
                        gr.Number(
                            value=weights[names.index(name)],
                            label=name,
                            info=help_text,
                            minimum=-1000,
                            maximum=1000,
                            step=0.1,
                            elem_id=f"grpo-weight-{name}",
                            interactive=name != "custom" or ctx.studio.rewards.custom_allowed,
                        )
                    )
        c["grpo_sample_btn"] = gr.Button(
            "Use the bundled prompts sample (prompts with answers)", size="sm", elem_id="grpo-sample-btn"
        )
        c["grpo_custom_upload"] = gr.UploadButton(
            "Upload a custom reward file (.py)…",
            file_types=[".py"],
            elem_id="grpo-custom-upload",
            interactive=ctx.studio.rewards.custom_allowed,
            size="sm",
        )
        c["grpo_notes"] = gr.Markdown(notes_md(ctx, base), elem_id="grpo-notes")
    c["grpo_panel"] = panel
    c["grpo_names"] = names


def wire(ctx: Ctx) -> None:
    """Events of both GRPO views (after the Model and Train tabs have wired theirs)."""
    c, f = ctx.c, ctx.fields
    names, weights = c["grpo_names"], c["grpo_weights"]
    refresh = ctx.hooks["refresh"]

    def show_panel(objective, *values):
        try:
            cfg = config_form.config_from_values(values)
        except FinetuneError:
            cfg = None
        return gr.Group(visible=objective == "grpo"), notes_md(ctx, cfg)

    gr.on(
        [f["objective"].change, f["learning_rate"].change, f["num_generations"].change],
        show_panel,
        [f["objective"], *ctx.field_list],
        [c["grpo_panel"], c["grpo_notes"]],
        api_visibility="private",
        show_progress="hidden",
        trigger_mode="always_last",
    )
    f["reward_functions"].change(
        lambda spec: weights_from_spec(spec, names), f["reward_functions"], weights, api_visibility="private"
    )
    refresh(
        gr.on(
            [w.input for w in weights],
            lambda *values: spec_from_weights(names, values),
            weights,
            f["reward_functions"],
            api_name="set_reward_weights",
            show_progress="hidden",
            trigger_mode="always_last",
        )
    )

    def upload(path, spec):
        try:
            stored = ctx.studio.rewards.store_custom_file(path)
        except FinetuneError as exc:
            gr.Warning(error_text(exc))
            return gr.skip(), gr.skip()
        gr.Info("Custom reward file stored; its weight is set to 1")
        with_custom = spec if "custom" in (spec or "") else ", ".join(p for p in (spec, "custom") if p)
        return stored, with_custom

    refresh(
        c["grpo_custom_upload"].upload(
            upload, [c["grpo_custom_upload"], f["reward_functions"]], [f["reward_custom_file"], f["reward_functions"]]
        )
    )
    sample = ctx.studio.data.prompts_sample
    refresh(
        ctx.hooks["reanalyze"](
            c["grpo_sample_btn"].click(lambda: sample, None, f["dataset_path"], api_name="use_prompts_sample")
        )
    )
    wire_train(ctx)


# --- sampled completions (Train tab) ----------------------------------------------------------------
def build_train(ctx: Ctx) -> None:
    c = ctx.c
    with gr.Accordion("Sampled completions and their rewards (GRPO)", open=True, visible=False) as box:
        c["grpo_samples_md"] = gr.Markdown(elem_id="grpo-samples-md")
        c["grpo_samples"] = gr.Dataframe(
            headers=TABLE_HEADERS,
            interactive=False,
            wrap=True,
            max_height=420,
            elem_id="grpo-samples",
            label="Completions",
            max_chars=MAX_CELL,
        )
    c["grpo_samples_box"] = box
    c["grpo_samples_shown"] = gr.State("")
    c["grpo_timer"] = gr.Timer(SAMPLES_POLL_S)


def samples_table(records: list[dict]):
    """One row per completion: its row, prompt, completion, answer, total reward and each function's."""
    import pandas as pd

    names = list(dict.fromkeys(n for r in records for n in (r.get("rewards") or {})))
    rows = []
    for r in records:
        row = {
            "row": r.get("row"),
            "prompt": str(r.get("prompt", ""))[-MAX_CELL:],
            "completion": str(r.get("completion", "")),
            "answer": "" if r.get("answer") is None else str(r.get("answer")),
            "reward": round(float(r.get("reward", 0.0)), 3),
        }
        if len(names) > 1:
            row.update({n: round(float((r.get("rewards") or {}).get(n, 0.0)), 3) for n in names})
        rows.append(row)
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=TABLE_HEADERS)


def samples_update(ctx: Ctx, run_name: str | None, shown: str):
    """(box, heading, table, shown) for the run shown in the Train tab; gr.skip() when nothing changed."""
    skip = (gr.skip(),) * 4
    if not run_name:
        return (gr.Accordion(visible=False), gr.skip(), gr.skip(), "") if shown else skip
    try:
        steps = ctx.studio.rewards.sample_steps(run_name)
    except FinetuneError:
        steps = []
    if not steps:
        return (gr.Accordion(visible=False), gr.skip(), gr.skip(), "") if shown else skip
    key = f"{run_name}|{steps[-1]}"
    if key == shown:
        return skip
    try:
        records = ctx.studio.rewards.samples(run_name)
    except FinetuneError as exc:
        return gr.Accordion(visible=True), f"Cannot read the samples: {md_escape(error_text(exc))}", gr.skip(), key
    mean = sum(float(r.get("reward", 0.0)) for r in records) / len(records) if records else 0.0
    heading = (
        f"**Step {steps[-1]}**: {len(records)} completions, mean reward **{mean:.3f}** "
        f"({len(steps)} samples saved in the run folder, `completions/`)"
    )
    return gr.Accordion(visible=True), heading, samples_table(records), key


def wire_train(ctx: Ctx) -> None:
    c = ctx.c
    outputs = [c["grpo_samples_box"], c["grpo_samples_md"], c["grpo_samples"], c["grpo_samples_shown"]]
    c["grpo_timer"].tick(
        lambda name, shown: samples_update(ctx, name, shown),
        [c["watch"], c["grpo_samples_shown"]],
        outputs,
        api_visibility="private",
        show_progress="hidden",
        trigger_mode="always_last",
        concurrency_limit=8,
    )


# --- a prompt row in the Data tab ---------------------------------------------------------------------
def prompt_row_html(rendered: dict) -> str:
    """A GRPO prompt row: the prompt as generation starts from it, the answer the rewards compare with, and
    the other columns the reward functions get. Nothing of it is trained on: completions are sampled."""
    row = rendered["prompt_row"]
    legend = (
        f'<div class="seg-legend">prompt {row["prompt_tokens"]} tokens · GRPO samples the completions during '
        "training: nothing of this row carries loss</div>"
    )
    prompt = f'<pre class="seg-text seg-masked" id="data-template-text">{html.escape(row["prompt_text"])}</pre>'
    answer = "(no answer column)" if row.get("answer") is None else str(row["answer"])
    extra = "".join(
        f"<div><b>{html.escape(str(k))}</b>: {html.escape(str(v))[:200]}</div>" for k, v in row["columns"].items()
    )
    return (
        legend
        + prompt
        + f'<div class="pair-row" id="data-prompt-row"><div class="pair-col pair-chosen"><div class="pair-head">'
        f'answer</div><pre class="seg-text">{html.escape(answer)}</pre></div>'
        + (f'<div class="pair-col"><div class="pair-head">other columns</div>{extra}</div>' if extra else "")
        + "</div>"
    )
