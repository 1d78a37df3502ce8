"""Chat view (the Test tab's first view): a multi-turn conversation with the base and the fine-tuned model in
two panes sharing one history. Each message goes to both; each pane keeps its own answers, so every model
answers in the context of the user's turns and its own earlier replies. Streamed, with the shared decoding
settings; the system prompt is the shared one when typed, else the run's (the system turn its training
rows carry).

Engine calls: the Studio's judging desk (chat under the GPU lease, run_system_prompt). The history lives in
gr.State per page (a plain dict); choosing another run starts a new chat (ui.run_views calls `clear`),
unless a message was already sent to that run (ui.state.ShownRuns).
"""

from __future__ import annotations

from functools import partial

import gradio as gr

from finetune.errors import FinetuneError
from finetune.studio import NO_RUN
from ui.eval_common import settings_from
from ui.state import GPU, Ctx, error_text, md_error, md_escape

INTRO = (
    "Talk to both models at once: each message goes to the base and to the fine-tuned model, and each keeps "
    "its own side of the conversation. Uses the decoding settings above; the system prompt is the one typed "
    "there, else the one the run trained with."
)


def build(ctx: Ctx) -> None:
    c = ctx.c
    gr.Markdown(INTRO, elem_id="chat-intro")
    c["chat_state"] = gr.State(None)  # {"run": name, "history": ChatHistory.to_dict()}
    c["chat_system_md"] = gr.Markdown(elem_id="chat-system", elem_classes="ft-muted")
    with gr.Row(equal_height=True):
        c["chat_base"] = gr.Chatbot(label="Base model", height=420, elem_id="chat-base", buttons=["copy"])
        c["chat_tuned"] = gr.Chatbot(label="Fine-tuned", height=420, elem_id="chat-tuned", buttons=["copy"])
    with gr.Row(equal_height=True):
        c["chat_input"] = gr.Textbox(
            placeholder="Message both models… (Enter sends)", show_label=False, lines=1, scale=6, elem_id="chat-input"
        )
        c["chat_send"] = gr.Button("Send", variant="primary", scale=1, min_width=90, elem_id="chat-send")
        c["chat_clear"] = gr.Button("New chat", scale=1, min_width=90, elem_id="chat-clear")
    c["chat_msg"] = gr.Markdown(elem_id="chat-msg")


def panes(history: dict | None) -> tuple[list, list]:
    """The two panes' messages from a history dict (each side's own answers)."""
    if not history:
        return [], []

    def pane(side: str) -> list[dict]:
        out = []
        answers = history.get("answers", {}).get(side, [])
        for i, text in enumerate(history.get("user", [])):
            out.append({"role": "user", "content": text})
            if i < len(answers):
                out.append({"role": "assistant", "content": answers[i]})
        return out

    return pane("base"), pane("finetuned")


def system_line(system: str) -> str:
    if not system.strip():
        return "System prompt: none (the run trained without one; type one in the decoding settings to use it)."
    return f"System prompt: “{md_escape(system[:300])}”"


def send(ctx: Ctx, run_name, state, text, system, temperature, top_p, max_new, seed, session: str = ""):
    """Stream both answers to one message. Outputs: state, base pane, fine-tuned pane, input box, system line,
    message."""
    try:
        if not run_name:
            raise FinetuneError(NO_RUN)
        ctx.shown_runs.chatted(session, run_name)  # a change to this run answered later keeps this chat
        settings = settings_from(system, temperature, top_p, max_new, seed)
        history = (state or {}).get("history") if (state or {}).get("run") == run_name else None
        ctx.studio.lease.refuse_while_training("chatting")
        turns = len((history or {}).get("user", [])) + 1
        last = None
        for last in ctx.studio.judge.chat(run_name, history, text, settings):
            data = last.to_dict()
            base, tuned = panes(data)
            side = "base model" if len(data["answers"]["finetuned"]) < turns else "fine-tuned model"
            yield gr.skip(), base, tuned, "", system_line(last.system), f"… The {side} is answering…"
    except Exception as exc:
        gr.Warning(error_text(exc))
        yield gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), md_error(exc, "Not sent")
        return
    data = last.to_dict()
    base, tuned = panes(data)
    yield (
        {"run": run_name, "history": data},
        base,
        tuned,
        "",
        system_line(last.system),
        f"✔ Turn {turns}: both answered.",
    )


RUN_OUTPUTS = ("chat_state", "chat_base", "chat_tuned", "chat_system_md", "chat_msg")  # what `clear` returns


def clear(ctx: Ctx, run_name):
    """A new chat for the chosen run: state, both panes, system line, message."""
    system = ""
    if run_name:
        try:
            system = ctx.studio.judge.run_system_prompt(run_name)
        except Exception as exc:
            return None, [], [], "", md_error(exc, "No chat")
    return None, [], [], system_line(system), ""


def wire(ctx: Ctx, settings_inputs: list) -> None:
    c = ctx.c
    inputs = [c["test_run"], c["chat_state"], c["chat_input"], *settings_inputs]
    outputs = [c["chat_state"], c["chat_base"], c["chat_tuned"], c["chat_input"], c["chat_system_md"], c["chat_msg"]]

    def run_send(run_name, state, text, system, temperature, top_p, max_new, seed, request: gr.Request):
        session = ctx.shown_runs.session_of(request)
        yield from send(ctx, run_name, state, text, system, temperature, top_p, max_new, seed, session=session)

    c["chat_send"].click(run_send, inputs, outputs, api_name="chat_send", concurrency_id=GPU, concurrency_limit=1)
    c["chat_input"].submit(run_send, inputs, outputs, api_visibility="private", concurrency_id=GPU, concurrency_limit=1)
    reset_out = [c[k] for k in RUN_OUTPUTS]
    c["chat_clear"].click(partial(clear, ctx), c["test_run"], reset_out, api_name="chat_clear")
