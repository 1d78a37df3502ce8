"""Blind A/B view (inside the Test tab): two answers shown as A and B, sides drawn at random per
prompt; the user picks A, B, tie or both bad (buttons or keys 1-4 / A B T X), then the sides are
revealed and the tally (fine-tuned win rate over base with a 95% interval) is updated.

Engine calls: the Studio's judging desk (blind_pair, vote, tally, tally_figure, export_votes,
held_out_prompt). The BlindPair stays in gr.State on the server:
the page only ever sees its two texts until the vote is in. Votes live in <run>/votes.jsonl,
so the tally survives restarts. The shortcut keys are wired by ui.launch.JS (button elem_ids).
"""

from __future__ import annotations

from functools import partial
from html import escape

import gradio as gr

from finetune.errors import FinetuneError
from ui import votes_view
from ui.eval_common import settings_from
from ui.state import GPU, Ctx, error_text, md_error, md_escape

CHOICES = {
    "a": ("ab-a", "A is better"),
    "b": ("ab-b", "B is better"),
    "tie": ("ab-tie", "Tie"),
    "both_bad": ("ab-bad", "Both bad"),
}
VOTE_KEYS = {choice: f"ab_vote_{choice}" for choice in CHOICES}  # the vote buttons in ctx.c
SHORTCUTS = "Keys: **1** or **A** · **2** or **B** · **3** or **T** (tie) · **4** or **X** (both bad)"
SIDE_NAMES = {"base": "base model", "finetuned": "fine-tuned"}


def build(ctx: Ctx) -> None:
    c = ctx.c
    gr.Markdown(
        "Judge without knowing which is which: the two answers come from the base and the fine-tuned "
        "model, on sides drawn at random for every prompt. Vote, then the sides are revealed. "
        "Votes are saved in the run folder.",
        elem_id="ab-intro",
    )
    c["ab_pair"] = gr.State(None)  # {"run": name, "pair": BlindPair}; never sent to the page
    with gr.Row(equal_height=True):
        c["ab_prompt"] = gr.Textbox(
            label="Prompt",
            lines=2,
            scale=5,
            elem_id="ab-prompt",
            placeholder="Type a prompt, or draw one from the held-out rows",
        )
        with gr.Column(scale=1, min_width=180):
            c["ab_new"] = gr.Button("New blind pair", variant="primary", elem_id="ab-new")
            c["ab_draw"] = gr.Button("Draw a held-out prompt", size="sm", elem_id="ab-draw")
    c["ab_msg"] = gr.Markdown(elem_id="ab-msg")
    with gr.Row(equal_height=True):
        c["ab_a"] = gr.Textbox(label="Answer A", lines=8, max_lines=16, interactive=False, elem_id="ab-answer-a")
        c["ab_b"] = gr.Textbox(label="Answer B", lines=8, max_lines=16, interactive=False, elem_id="ab-answer-b")
    with gr.Row(elem_id="ab-buttons"):
        for choice, (elem_id, label) in CHOICES.items():
            variant = "secondary" if choice in ("tie", "both_bad") else "primary"
            c[VOTE_KEYS[choice]] = gr.Button(label, variant=variant, interactive=False, elem_id=elem_id)
    gr.Markdown(SHORTCUTS + " (while no text box has the focus).", elem_id="ab-keys", elem_classes="ft-muted")
    c["ab_reveal"] = gr.Markdown(elem_id="ab-reveal")
    c["ab_tally"] = gr.Markdown("No votes yet.", elem_id="ab-tally", container=True)
    c["ab_plot"] = gr.Plot(label="Votes", elem_id="ab-plot", show_label=False)
    with gr.Accordion("Export the votes, or train DPO from them", open=False, elem_id="ab-export"):
        with gr.Row():
            c["ab_export_csv"] = gr.Button("Votes as CSV", size="sm", elem_id="ab-export-csv")
            c["ab_export_jsonl"] = gr.Button("Votes as JSONL", size="sm", elem_id="ab-export-jsonl")
        c["ab_file"] = gr.File(label="Votes file", interactive=False, height=90, elem_id="ab-file")
        votes_view.build(ctx)


def vote_buttons(ctx: Ctx) -> list:
    return [ctx.c[VOTE_KEYS[choice]] for choice in CHOICES]


def buttons_state(enabled: bool, identical: bool = False) -> list:
    """Updates for the four vote buttons; identical answers can only be a tie or both bad."""
    return [gr.Button(interactive=enabled and not (identical and choice in ("a", "b"))) for choice in CHOICES]


def tally_outputs(ctx: Ctx, run_name: str | None):
    """(tally markdown, tally figure) for the votes stored in the run; nothing when no run is chosen."""
    if not run_name:
        return "No run chosen.", None
    try:
        result = ctx.studio.judge.tally(run_name)
    except Exception as exc:
        return md_error(exc, "No tally"), None
    head = f"**Blind A/B tally for {md_escape(run_name)}**\n\n"
    return head + md_escape(result.text()), (votes_figure(ctx, result) if result.n else None)


def votes_figure(ctx: Ctx, result):
    """The engine's stacked bar, with whole-number ticks (counts) and the legend in bar order."""
    fig = ctx.studio.judge.tally_figure(result)
    fig.update_xaxes(title_text="votes", rangemode="tozero", dtick=1 if result.n <= 12 else None)
    fig.update_layout(legend={"traceorder": "normal", "orientation": "h", "y": -0.45}, height=200)
    return fig


def new_pair(ctx: Ctx, run_name, prompt, system, temperature, top_p, max_new, seed):
    """Generate both answers and put them on random sides; outputs: state, A, B, message, 4 buttons, reveal."""
    try:
        if not (prompt or "").strip():
            raise FinetuneError("Type a prompt first (or draw a held-out one).")
        settings = settings_from(system, temperature, top_p, max_new, seed)
        pair = ctx.studio.judge.blind_pair(run_name, prompt, settings)
    except Exception as exc:
        gr.Warning(error_text(exc))
        return None, "", "", md_error(exc, "No blind pair"), *buttons_state(False), ""
    note = (
        "Both models gave the **same** answer: vote tie or both bad."
        if pair.identical
        else "Which answer is better? Vote with the buttons or the keys."
    )
    return {"run": run_name, "pair": pair}, pair.answer_a, pair.answer_b, note, *buttons_state(True, pair.identical), ""


def vote(ctx: Ctx, choice: str, held):
    """Record the vote for the pair in the page's state, reveal the sides, refresh the tally.
    Outputs: state, reveal, tally text, tally figure, 4 buttons."""
    if not held:
        gr.Warning("Generate a blind pair first: there is nothing to vote on.")
        return None, gr.skip(), gr.skip(), gr.skip(), *buttons_state(False)
    pair = held["pair"]
    try:
        stored = ctx.studio.judge.vote(held["run"], pair, choice)
    except Exception as exc:
        gr.Warning(error_text(exc))
        return None, md_error(exc, "Vote not saved"), gr.skip(), gr.skip(), *buttons_state(False)
    side = pair.reveal()
    verdict = {
        "finetuned": "the **fine-tuned** model wins",
        "base": "the **base** model wins",
        "tie": "a **tie**",
        "both_bad": "**both bad**",
    }[stored.winner]
    reveal = (
        f"✔ Vote saved: {escape(CHOICES[choice][1])} → {verdict}.\n\n"
        f"- **A** was the {SIDE_NAMES[side['a']]} ({pair.tokens_a} tokens, {pair.seconds_a:.2f} s)\n"
        f"- **B** was the {SIDE_NAMES[side['b']]} ({pair.tokens_b} tokens, {pair.seconds_b:.2f} s)"
    )
    text, fig = tally_outputs(ctx, held["run"])
    return None, reveal, text, fig, *buttons_state(False)


def draw_prompt(ctx: Ctx, run_name):
    """A random prompt from the run's held-out (validation) rows."""
    try:
        return ctx.studio.judge.held_out_prompt(run_name)
    except Exception as exc:
        gr.Warning(error_text(exc))
        return gr.skip()


def export(ctx: Ctx, fmt: str, run_name):
    try:
        path = ctx.studio.judge.export_votes(run_name, fmt)
    except Exception as exc:
        gr.Warning(error_text(exc))
        return None
    return str(path)


def wire(ctx: Ctx, settings_inputs: list) -> None:
    c = ctx.c
    buttons = vote_buttons(ctx)
    pair_out = [c["ab_pair"], c["ab_a"], c["ab_b"], c["ab_msg"], *buttons, c["ab_reveal"]]
    pair_in = [c["test_run"], c["ab_prompt"], *settings_inputs]
    run_pair = partial(new_pair, ctx)
    c["ab_new"].click(run_pair, pair_in, pair_out, api_name="ab_new_pair", concurrency_id=GPU, concurrency_limit=1)
    c["ab_prompt"].submit(
        run_pair, pair_in, pair_out, api_visibility="private", concurrency_id=GPU, concurrency_limit=1
    )
    vote_out = [c["ab_pair"], c["ab_reveal"], c["ab_tally"], c["ab_plot"], *buttons]
    for choice, button in zip(CHOICES, buttons):
        # the buttons go grey at once in the browser, so a double click or key repeat cannot vote twice
        button.click(
            partial(vote, ctx, choice),
            c["ab_pair"],
            vote_out,
            api_name=f"ab_vote_{choice}",
            js="(x) => { document.querySelectorAll('#ab-buttons button').forEach(b => b.disabled = true); return x; }",
        )
    c["ab_draw"].click(partial(draw_prompt, ctx), c["test_run"], c["ab_prompt"], api_name="ab_draw_prompt")
    c["ab_export_csv"].click(partial(export, ctx, "csv"), c["test_run"], c["ab_file"], api_name="export_votes_csv")
    c["ab_export_jsonl"].click(
        partial(export, ctx, "jsonl"), c["test_run"], c["ab_file"], api_name="export_votes_jsonl"
    )
    votes_view.wire(ctx)

    def ab_tally(run_name: str) -> str:
        """The tally of a run for API clients (Markdown), the text the page shows; the page's own tally
        follows the chosen run through ui.run_views."""
        return tally_outputs(ctx, run_name)[0]

    gr.api(ab_tally, api_name="ab_tally")


RUN_OUTPUTS = ("ab_tally", "ab_plot", "ab_pair", "ab_a", "ab_b", *VOTE_KEYS.values(), "ab_reveal")


def for_run(ctx: Ctx, run_name):
    """What the view shows when a run is chosen (ui.run_views): the run's tally, read from disk (so it
    survives restarts), and no pair (a pair drawn for another run is dropped)."""
    return (*tally_outputs(ctx, run_name), None, "", "", *buttons_state(False), "")
