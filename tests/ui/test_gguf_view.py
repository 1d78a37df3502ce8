"""The GGUF export in a real (headless) Chromium: the Export tab makes a q8_0 GGUF with its Modelfile,
and the Test tab compares it with the fine-tune (side by side and batch evaluation).

Screenshots go to test-artifacts/ (gitignored).
"""

from __future__ import annotations

import os

import pytest
import torch
from helpers_app import served
from helpers_browser import CHROMIUM, LONG, open_tab, shot

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed (apt-get install chromium)"),
]
PROMPT = "What is the capital of France?"


def _gguf_answer(path, max_new_tokens: int = 64) -> str:
    """The file's greedy answer with plain transformers: what the Test tab's GGUF side must show."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    messages = [{"role": "user", "content": PROMPT}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True, return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def test_export_a_gguf_and_judge_it(workspace, trained_sft_run, copy_run, page):  # noqa: F811
    from playwright.sync_api import expect

    run = copy_run(trained_sft_run, name="gguf-ui")
    with served(workspace) as (_, _, url):
        page.goto(url)
        open_tab(page, "5 · Export")
        types = page.locator("#export-gguf-types")
        expect(types).to_contain_text("q8_0")
        expect(types).to_contain_text("divisible by 256")  # the demo's K-quants are refused, with the reason
        expect(page.locator("#export-gguf-type input")).to_have_value("q8_0")
        page.locator("#export-gguf-btn").click()
        msg = page.locator("#export-gguf-msg")
        expect(msg).to_contain_text("gguf-ui.q8_0.gguf", timeout=LONG)
        expect(msg).to_contain_text("MB in")
        expect(msg).to_contain_text("<|im_end|>")
        expect(page.locator("#export-gguf-commands")).to_contain_text("ollama create gguf-ui:q8_0 -f")
        expect(page.locator("#export-gguf-commands")).to_contain_text("llama-server -m")
        files = page.locator("#export-gguf-files")
        for name in ("gguf-ui.q8_0.gguf", "gguf-ui.q8_0.Modelfile"):
            expect(files.get_by_role("cell", name=name)).to_be_visible()
        shot(page, "gguf-01-export")
        path = run.path / "exports" / "gguf" / "gguf-ui.q8_0.gguf"
        assert path.is_file() and path.with_name("gguf-ui.q8_0.Modelfile").is_file()

        open_tab(page, "4 · Test")
        page.locator("#test-against input").click()
        page.get_by_role("option", name="GGUF q8_0 (gguf-ui.q8_0.gguf)").click()
        page.get_by_role("tab", name="Side by side").click()  # the Test tab opens on the chat
        expect(page.locator("#answer-base")).to_contain_text("GGUF q8_0")  # the box is named after its side
        page.locator("#test-prompt textarea").fill(PROMPT)
        page.locator("#test-btn").click()
        expect(page.locator("#test-msg")).to_contain_text("Done", timeout=LONG)
        left = page.locator("#answer-base textarea").input_value()
        assert left == _gguf_answer(path)
        assert page.locator("#answer-tuned textarea").input_value().strip()
        shot(page, "gguf-02-side-by-side")

        page.get_by_role("tab", name="Batch evaluation").click()
        limit = page.locator("#eval-limit input")
        limit.fill("2")
        limit.press("Tab")
        page.locator("#eval-start").click()
        expect(page.locator("#eval-msg")).to_contain_text("Done: 2 rows", timeout=LONG)
        expect(page.locator("#eval-summary")).to_contain_text("GGUF q8_0")
        shot(page, "gguf-03-eval")
