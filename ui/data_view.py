"""The HTML/Markdown the Data tab shows for the studio's data reports (nothing here reads data)."""

from __future__ import annotations

import html

from finetune.errors import FinetuneError
from finetune.studio import Studio, source_label
from ui.grpo_view import prompt_row_html
from ui.state import md_escape

# --- rendering -----------------------------------------------------------------------
ANSWER_TITLES = {
    "chosen": "✔ chosen",
    "rejected": "✖ rejected",
    "good": "✔ good (label true)",
    "bad": "✖ bad (label false)",
}


def chat_messages(chat: list[dict]) -> list[dict]:
    out = []
    for m in chat:
        role, content = m.get("role"), str(m.get("content", ""))
        if m.get("title"):  # a preference answer: which one it is, on top of its bubble
            title = ANSWER_TITLES.get(m["title"], m["title"])
            out.append({"role": "assistant", "content": f"**{title}**\n\n{content}"})
        elif role in ("user", "assistant"):
            out.append({"role": role, "content": content})
        elif role == "system":  # shown as a collapsible note: Chatbot has no system bubble
            out.append({"role": "assistant", "content": content, "metadata": {"title": "System prompt"}})
        else:  # plain text rows
            out.append({"role": "assistant", "content": content})
    return out


def segments_html(rendered: dict) -> str:
    legend = (
        '<div class="seg-legend"><span class="seg-trained">trained (carries loss)</span> '
        '<span class="seg-masked">no loss (prompt, template)</span> '
        f"{rendered.get('trained_tokens', '?')} of {rendered.get('num_tokens', '?')} tokens trained</div>"
    )
    if rendered.get("hidden_chars"):
        legend += (
            f'<div class="seg-legend">This example is long: {rendered["hidden_chars"]:,} characters are not shown '
            "(and not counted above); the length statistics measure all of it.</div>"
        )
    spans = []
    for text, trained in rendered.get("segments", []):
        cls = "seg-trained" if trained else "seg-masked"
        spans.append(f'<span class="{cls}">{html.escape(text)}</span>')
    return legend + f'<pre class="seg-text" id="data-template-text">{"".join(spans)}</pre>'


def pair_html(rendered: dict) -> str:
    """A preference example: the shared prompt, then chosen and rejected (or KTO's labelled completion)
    side by side as the trainer sees them, with token counts."""
    pair = rendered["pair"]
    columns = []
    for answer in pair["answers"]:
        columns.append(
            f'<div class="pair-col pair-{html.escape(answer["name"])}"><div class="pair-head">{html.escape(answer["name"])}'
            f' · {answer["tokens"]} tokens</div><pre class="seg-text">{html.escape(answer["text"])}</pre></div>'
        )
    legend = (
        f'<div class="seg-legend">prompt {pair["prompt_tokens"]} tokens · the length audit counts prompt + the longer '
        f"answer: {rendered['num_tokens']} tokens</div>"
    )
    prompt = f'<pre class="seg-text seg-masked" id="data-template-text">{html.escape(pair["prompt_text"])}</pre>'
    return legend + prompt + f'<div class="pair-row" id="data-pair">{"".join(columns)}</div>'


def preview(studio: Studio, report, model: str, index: int, train_on_prompt: bool, trust_remote_code: bool = False):
    """(chat messages, templated-text HTML) of example `index` (1-based) of a report."""
    if report is None or not report.rows:
        return [], ""
    try:
        rendered = studio.data.render(report, index, model, bool(train_on_prompt), trust_remote_code)
    except FinetuneError as exc:
        return [], f'<p class="seg-error">{html.escape(str(exc))}</p>'
    if "prompt_row" in rendered:  # GRPO prompts: the prompt, its answer and the columns the rewards read
        return chat_messages(rendered["chat"]), prompt_row_html(rendered)
    if "pair" in rendered:  # preference data: the prompt, then chosen and rejected side by side
        return chat_messages(rendered["chat"]), pair_html(rendered)
    return chat_messages(rendered["chat"]), segments_html(rendered)


def summary_md(dataset_path: str, report) -> str:
    lines = [
        f"**Data:** {md_escape(source_label(dataset_path))}  ",
        f"**{report.kept_rows}** of {report.total_rows} rows usable · **{len(report.skipped)}** skipped · "
        f"shape: {report.shape}",
    ]
    if report.shape == "preference":
        lines.append(
            "- Preference pairs: train them with the objective **DPO**, **ORPO** or **KTO** (Model & memory tab)."
        )
    elif report.shape == "prompts":
        lines.append(
            "- Prompts with answers: train them with the objective **GRPO** and reward functions (Model & memory tab)."
        )
    elif report.shape == "unpaired_preference":
        lines.append("- Labelled completions: train them with the objective **KTO** (Model & memory tab).")
    for w in report.warnings:
        lines.append(f"- ⚠ {md_escape(w)}")
    return "\n".join(lines)


def truncation_md(stats: dict, max_length: int) -> str:
    if not stats or not stats.get("count"):
        return ""
    pct = 100 * stats["truncated"] / stats["count"]
    icon = "✔" if stats["truncated"] == 0 else "⚠"
    return (
        f"{icon} **{stats['truncated']} of {stats['count']}** examples are longer than max_length = **{int(max_length)}** "
        f"and would be truncated ({pct:.1f}%).  \n"
        f"Lengths: min {stats['min']}, p50 {stats['p50']:g}, p95 {stats['p95']:g}, p99 {stats['p99']:g}, "
        f"max {stats['max']} · suggested max_length: **{stats['suggested_max_length']}**"
    )
