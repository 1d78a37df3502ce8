"""Prompt set × checkpoints view (inside the Test tab): a saved list of prompts, answered by the
base, every saved checkpoint of the run and the final adapter, as one grid. Reading across a row
shows when the model learned (or broke) something.

Engine calls: the Studio's judging desk (save/load/list prompt sets in the workspace,
prompts_from_text, prompt_grid with progress/stop under the GPU lease, latest_grid). Each
grid is saved by the engine in <run>/evaluations/; the latest is shown when a run is chosen.
"""

from __future__ import annotations

from functools import partial

import gradio as gr

from finetune.errors import FinetuneError
from finetune.studio import PromptGrid
from ui.eval_common import StopFlag, offer_stop_while, progress_callback, request_stop, settings_from
from ui.state import GPU, Ctx, error_text, frame_json, md_error, md_escape

EXAMPLE_PROMPTS = "Spell the word garden backwards.\nWhat is 17 plus 4?\nName three colours."


def build(ctx: Ctx) -> None:
    c = ctx.c
    gr.Markdown(
        "One set of prompts, answered by the base model, every saved checkpoint (or those ticked) and the final adapter. "
        "Prompt sets are saved in the workspace, so every run can reuse them.",
        elem_id="grid-intro",
    )
    c["grid_stop_flag"] = gr.State(StopFlag())
    sets = _sets(ctx)
    with gr.Row(equal_height=False):
        c["grid_sets"] = gr.Dropdown(
            choices=sets,
            value=None,
            label="Saved prompt sets",
            elem_id="grid-sets",
            info="Pick one to load it into the box below.",
            scale=1,
        )
        with gr.Column(scale=1):
            c["grid_name"] = gr.Textbox(
                label="Name to save as",
                placeholder="e.g. smoke-test",
                elem_id="grid-name",
                info="Letters, digits, - _ .",
            )
            c["grid_save"] = gr.Button("Save the prompts below as this set", size="sm", elem_id="grid-save")
    c["grid_prompts"] = gr.Textbox(
        value=EXAMPLE_PROMPTS,
        label="Prompts",
        lines=5,
        max_lines=20,
        elem_id="grid-prompts",
        info="One per line; or separate multi-line prompts with a line holding only ---",
    )
    c["grid_checkpoints"] = gr.Dropdown(
        choices=[],
        value=[],
        multiselect=True,
        allow_custom_value=True,  # the choices follow the run picked on the page
        label="Checkpoints (every saved one; none picked means all; the base and the final adapter are always in)",
        elem_id="grid-checkpoints",
    )
    with gr.Row():
        c["grid_run"] = gr.Button(
            "Run on base, every checkpoint and final", variant="primary", elem_id="grid-run", scale=3
        )
        c["grid_stop"] = gr.Button("Stop", variant="stop", elem_id="grid-stop", scale=1, interactive=False)
    c["grid_msg"] = gr.Markdown(elem_id="grid-msg")
    c["grid_table"] = gr.Dataframe(
        headers=["prompt", "base", "final"],
        interactive=False,
        wrap=True,
        max_height=560,
        elem_id="grid-table",
        label="Answers: prompt × model",
        max_chars=600,
    )


def _sets(ctx: Ctx) -> list[str]:
    try:
        return ctx.studio.judge.prompt_sets()
    except Exception:
        return []


def grid_frame(grid: PromptGrid):
    """prompt × {base, checkpoint-N..., final}; cells not reached after a stop read "(not run)"."""
    return grid.to_dataframe().fillna("(not run)")


def grid_table(grid: PromptGrid):
    """The grid as shown: an update with column widths, the prompt column narrow, the answers sharing the rest."""
    frame = grid_frame(grid)
    share = 82 / max(len(grid.columns), 1)
    return gr.Dataframe(value=frame, column_widths=["18%", *[f"{share:.1f}%" for _ in grid.columns]])


def grid_note(grid: PromptGrid, prefix: str) -> str:
    when = grid.path.name if grid.path else "not saved"
    note = (
        f"{prefix} {len(grid.prompts)} prompt(s) × {len(grid.columns)} models "
        f"({md_escape(', '.join(grid.columns))}), saved as `{md_escape(when)}`."
    )
    if grid.stopped:
        note += " **Stopped early**: the cells not reached read “(not run)”."
    if grid.skipped:
        note += "\n\nSkipped: " + md_escape("; ".join(grid.skipped))
    return note


def save_set(ctx: Ctx, name, text):
    """Outputs: message, saved-sets dropdown."""
    try:
        name = (name or "").strip()
        if not name:
            raise FinetuneError("Type a name for the prompt set first.")
        prompts = ctx.studio.judge.prompts_from_text(text)
        ctx.studio.judge.save_prompt_set(name, prompts)
    except Exception as exc:
        gr.Warning(error_text(exc))
        return md_error(exc, "Prompt set not saved"), gr.skip()
    return (
        f"✔ Saved prompt set **{md_escape(name)}** ({len(prompts)} prompt(s)).",
        gr.Dropdown(choices=_sets(ctx), value=name),
    )


def load_set(ctx: Ctx, name):
    """Outputs: prompts text, name box, message."""
    if not name:
        return gr.skip(), gr.skip(), gr.skip()
    try:
        prompts = ctx.studio.judge.load_prompt_set(name)
    except Exception as exc:
        gr.Warning(error_text(exc))
        return gr.skip(), gr.skip(), md_error(exc, "Prompt set not loaded")
    sep = "\n---\n" if any("\n" in p for p in prompts) else "\n"
    return sep.join(prompts), name, f"Loaded prompt set **{md_escape(name)}** ({len(prompts)} prompt(s))."


def checkpoint_choices(ctx: Ctx, run_name):
    """Every saved checkpoint of the chosen run, all picked (ui.run_views calls it when the run changes)."""
    try:
        names = ctx.studio.judge.checkpoints(run_name) if run_name else []
    except Exception:
        names = []
    return gr.Dropdown(choices=names, value=names)


def run_grid(
    ctx: Ctx, run_name, text, stop: StopFlag, system, temperature, top_p, max_new, seed, chosen=None,
    progress=gr.Progress(),
):  # fmt: skip
    """Outputs: message, table."""
    stop.clear()
    try:
        ctx.studio.lease.refuse_while_training("running the prompt grid")
        settings = settings_from(system, temperature, top_p, max_new, seed)
        prompts = ctx.studio.judge.prompts_from_text(text)
        progress(0.0, desc="Loading the models")
        stop.running = True
        grid = ctx.studio.judge.prompt_grid(
            run_name,
            prompts,
            settings,
            stop=stop,
            progress=progress_callback(progress, "Answering", "answers"),
            checkpoints=list(chosen) if chosen else None,  # none picked: every checkpoint
        )
    except Exception as exc:
        gr.Warning(error_text(exc))
        return md_error(exc, "No grid"), gr.skip()
    finally:
        stop.running = False
    return grid_note(grid, "✔ Done:"), grid_table(grid)


def saved_grid(ctx: Ctx, run_name) -> tuple[PromptGrid | None, str]:
    """The latest saved grid of the chosen run and its note (the reason when there is none)."""
    if not run_name:
        return None, ""
    try:
        grid = ctx.studio.judge.latest_grid(run_name)
    except Exception as exc:
        return None, md_error(exc, "Cannot show the last grid")
    if grid is None:
        return None, "*No prompt grid for this run yet.*"
    return grid, grid_note(grid, "Last grid:")


def latest(ctx: Ctx, run_name):
    """The latest saved grid of the chosen run: message, table."""
    grid, note = saved_grid(ctx, run_name)
    if grid is None:
        return note, gr.Dataframe(value=None, headers=["prompt", "base", "final"])
    return note, grid_table(grid)


def for_run(ctx: Ctx, run_name):
    """What the view shows when a run is chosen (ui.run_views): its checkpoints to pick, its latest grid."""
    return (checkpoint_choices(ctx, run_name), *latest(ctx, run_name))


RUN_OUTPUTS = ("grid_checkpoints", "grid_msg", "grid_table")  # what `for_run` returns


def latest_api(ctx: Ctx, run_name: str) -> dict:
    """The latest saved grid of a run as JSON: note (Markdown), headers and data ("(not run)" for cells a
    stop left); an empty table when there is none."""
    grid, note = saved_grid(ctx, run_name)
    return {"note": note, **frame_json(grid_frame(grid) if grid else None)}


def wire(ctx: Ctx, settings_inputs: list) -> None:
    c = ctx.c
    c["grid_save"].click(
        partial(save_set, ctx),
        [c["grid_name"], c["grid_prompts"]],
        [c["grid_msg"], c["grid_sets"]],
        api_name="save_prompt_set",
    )
    c["grid_sets"].input(
        partial(load_set, ctx),
        c["grid_sets"],
        [c["grid_prompts"], c["grid_name"], c["grid_msg"]],
        api_name="load_prompt_set",
    )
    work = c["grid_run"].click(
        partial(run_grid, ctx),
        [c["test_run"], c["grid_prompts"], c["grid_stop_flag"], *settings_inputs, c["grid_checkpoints"]],
        [c["grid_msg"], c["grid_table"]],
        api_name="run_grid",
        concurrency_id=GPU,
        concurrency_limit=1,
    )
    offer_stop_while(c["grid_run"].click, work, c["grid_stop"])
    c["grid_stop"].click(partial(request_stop, what="grid"), c["grid_stop_flag"], c["grid_msg"], api_name="stop_grid")
    # the chosen run's latest grid is drawn by ui.run_views; this is the same read for API clients

    def latest_grid(run_name: str) -> dict:
        return latest_api(ctx, run_name)

    gr.api(latest_grid, api_name="latest_grid")
    ctx.blocks.load(lambda: gr.Dropdown(choices=_sets(ctx)), None, c["grid_sets"], api_visibility="private")
