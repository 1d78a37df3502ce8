"""GRPO through the page in a real (headless) Chromium."""

from __future__ import annotations

import re

from helpers_browser import BROWSER_MARKS, LONG, choose_objective, expect_text, open_tab, set_steps, shot

pytestmark = BROWSER_MARKS


def test_grpo_run_shows_reward_charts_and_sampled_completions(served_app, page):
    """GRPO through the page: the objective and the reward functions with weights on the Model tab, the bundled
    prompts, Start, then the reward charts and the table of sampled completions with their rewards."""
    from playwright.sync_api import expect

    blocks, url = served_app
    page.goto(url)
    expect(page.locator("#data-summary")).to_contain_text("110", timeout=60_000)
    open_tab(page, "2 · Model & memory")
    expect(page.locator("#grpo-intro")).to_be_hidden()
    choose_objective(page, "GRPO")
    expect(page.locator("#grpo-intro")).to_be_visible(timeout=90_000)
    expect(page.locator("#grpo-notes")).to_contain_text("5e-3 collapsed")  # the CPU preset's SFT learning rate
    expect(page.locator("#grpo-notes")).to_contain_text("--allow-custom-rewards")
    expect(page.locator("#grpo-weight-custom input")).to_be_disabled()
    weight = page.locator("#grpo-weight-exact_answer input")
    weight.fill("0.5")
    weight.press("Tab")
    expect_text(page, "#model-command", "exact_answer:0.5, contains_answer")  # the form's reward_functions
    page.locator("#grpo-sample-btn").click()
    expect(page.locator("#data-summary")).to_contain_text("GRPO", timeout=60_000)
    expect(page.locator("#model-estimate")).to_contain_text("completions per step", timeout=90_000)
    shot(page, "grpo-01-model")
    set_steps(page, 4)
    expect_text(page, "#train-config", "GRPO")
    page.locator("#train-start").click()
    expect(page.locator("#train-msg")).to_contain_text("Started", timeout=LONG)
    expect(page.locator("#train-status")).to_contain_text(re.compile(r"grpo-\d+-\d+\W+done"), timeout=LONG)
    expect(page.locator("#plot-loss")).to_contain_text("Mean reward", timeout=60_000)
    expect(page.locator("#plot-loss .scatterlayer .trace").first).to_be_attached(timeout=60_000)
    expect(page.locator("#plot-grad")).to_contain_text("Completion length")
    expect(page.locator("#plot-acc")).to_contain_text("Clipped ratio")
    expect(page.locator("#grpo-samples-md")).to_contain_text("mean reward", timeout=60_000)
    table = page.locator("#grpo-samples")
    expect(table).to_contain_text("exact_answer")
    expect(table).to_contain_text("completion")
    run = page.locator("#train-watch input").input_value()
    samples = blocks.finetune_ctx.workspace / "runs" / run / "completions"
    assert (samples / "step-000001.jsonl").is_file()
    import json

    records = [json.loads(line) for line in (samples / "step-000001.jsonl").read_text().splitlines()]
    expect(page.locator("#grpo-samples-md")).to_contain_text("Step 1")  # the one sample of 4 steps: step 1
    shown = next(r["completion"].strip().splitlines()[0] for r in records if r["completion"].strip())
    expect(table).to_contain_text(shown[:20])
    shot(page, "grpo-02-trained")
