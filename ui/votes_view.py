"""Votes as training data (inside the Blind A/B view): the decided votes of one run or several become a
preference dataset (prompt, chosen, rejected; ties and "both bad" left out, with the counts shown), and
"Train DPO from these votes" starts a DPO run from the chosen run's adapter on that dataset, with the form
showing exactly what it trains (the Train tab follows it).

Engine calls: the Studio's judging desk (votes_to_preference, dpo_config) and the Studio (start, run_names).
"""

from __future__ import annotations

from functools import partial

import gradio as gr

from finetune.errors import FinetuneError
from ui import config_form
from ui.state import GPU, Ctx, error_text, md_error, md_escape, run_choices


def build(ctx: Ctx) -> None:
    c = ctx.c
    gr.Markdown(
        "**Votes as training data.** Every decided vote is a preference pair (the answer you preferred as "
        "*chosen*); ties and “both bad” are left out. Train DPO on them, starting from the run's adapter.",
        elem_id="votes-intro",
    )
    choices = run_choices(ctx.studio, with_adapter=True)
    c["votes_runs"] = gr.Dropdown(
        choices=choices,
        value=choices[:1],
        multiselect=True,
        label="Runs whose votes to use (DPO starts from the first)",
        elem_id="votes-runs",
    )
    with gr.Row():
        c["votes_pairs"] = gr.Button("Preference dataset from these votes", size="sm", elem_id="votes-pairs")
        c["votes_dpo"] = gr.Button("Train DPO from these votes", variant="primary", size="sm", elem_id="votes-dpo")
    c["votes_msg"] = gr.Markdown(elem_id="votes-msg")
    c["votes_file"] = gr.File(label="Preference dataset", interactive=False, height=90, elem_id="votes-file")


def runs_for(ctx: Ctx, run_name):
    """The run chosen in the Test tab preselected (ui.run_views calls it when the run changes)."""
    return gr.Dropdown(choices=run_choices(ctx.studio, with_adapter=True), value=[run_name] if run_name else [])


def _names(runs, current) -> list[str]:
    names = [r for r in (runs or []) if r] or ([current] if current else [])
    if not names:
        raise FinetuneError("Pick the run (or runs) whose votes to use.")
    return names


def pairs(ctx: Ctx, runs, current):
    """Outputs: message, file."""
    try:
        result = ctx.studio.judge.votes_to_preference(_names(runs, current))
    except Exception as exc:
        gr.Warning(error_text(exc))
        return md_error(exc, "No preference dataset"), None
    return f"✔ {md_escape(result.text())} Saved as `{md_escape(result.path.name)}`.", str(result.path)


def train_dpo(ctx: Ctx, runs, current, *values):
    """Write the pairs, then start DPO from the first run's adapter on them. Outputs: message, file, the form's
    fields, the Train tab's run shown, its drawn count and signature, the tabs."""
    keep = [gr.skip()] * len(values)
    try:
        names = _names(runs, current)
        config = config_form.config_from_values(values)
        result = ctx.studio.judge.votes_to_preference(names)
        config = ctx.studio.judge.dpo_config(config, names[0], result.path)
        run = ctx.studio.start(config)
    except Exception as exc:
        gr.Warning(error_text(exc))
        return md_error(exc, "DPO did not start"), gr.skip(), *keep, gr.skip(), gr.skip(), gr.skip(), gr.skip()
    gr.Info(f"Started {run.name}")
    message = (
        f"✔ {md_escape(result.text())} Started DPO run **{md_escape(run.name)}** from the adapter of "
        f"**{md_escape(names[0])}** (see the Train tab)."
    )
    watch = gr.Dropdown(choices=ctx.studio.run_names(), value=run.name)
    return (message, str(result.path), *config_form.values_from_config(config), watch, 0, "",
            gr.Tabs(selected="train"))  # fmt: skip


def wire(ctx: Ctx) -> None:
    c = ctx.c
    c["votes_pairs"].click(partial(pairs, ctx), [c["votes_runs"], c["test_run"]], [c["votes_msg"], c["votes_file"]],
                           api_name="votes_to_preference")  # fmt: skip
    outputs = [c["votes_msg"], c["votes_file"], *ctx.field_list, c["watch"], c["drawn"], c["sig"], c["tabs"]]
    ev = c["votes_dpo"].click(
        partial(train_dpo, ctx),
        [c["votes_runs"], c["test_run"], *ctx.field_list],
        outputs,
        api_name="train_dpo_from_votes",
        concurrency_id=GPU,
        concurrency_limit=1,
    )
    ctx.hooks["reanalyze"](ctx.hooks["refresh"](ev))  # the Data and Model tabs show the DPO run's data and plan
    c["votes_runs"].focus(lambda cur: gr.Dropdown(choices=run_choices(ctx.studio, with_adapter=True), value=cur),
                          c["votes_runs"], c["votes_runs"], api_visibility="private")  # fmt: skip
