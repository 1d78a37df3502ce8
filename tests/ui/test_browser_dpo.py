"""Preference tuning (DPO) through the page in a real (headless) Chromium."""

from __future__ import annotations

import re

from helpers_browser import BROWSER_MARKS, LONG, choose_objective, expect_text, open_tab, set_steps, shot

pytestmark = BROWSER_MARKS


def test_dpo_run_from_preference_data_to_side_by_side(served_app, page):
    """Preference tuning through the page, the usual way: a short SFT run first, then the preference sample
    side by side, DPO and "Start from" that run chosen on the Model tab, the rewards charts filling, then
    side-by-side answers and preference accuracy in batch evaluation."""
    from playwright.sync_api import expect

    blocks, url = served_app
    page.goto(url)
    expect(page.locator("#data-summary")).to_contain_text("110", timeout=60_000)
    set_steps(page, 8)
    page.locator("#train-start").click()
    expect(page.locator("#train-status")).to_contain_text("done", timeout=LONG)
    sft_run = page.locator("#train-watch input").input_value()
    assert "qlora" in sft_run and "dpo" not in sft_run

    open_tab(page, "1 · Data")
    page.locator("#data-pref-sample-btn").click()
    expect(page.locator("#data-detected")).to_contain_text("preference", timeout=60_000)
    expect(page.locator("#data-summary")).to_contain_text("preference")
    page.get_by_role("tab", name="As the model sees it").click()
    pair = page.locator("#data-pair")
    expect(pair).to_contain_text("chosen")
    expect(pair).to_contain_text("rejected")
    shot(page, "dpo-01-pair")

    open_tab(page, "2 · Model & memory")
    choose_objective(page, "DPO")
    expect(page.locator("#model-estimate")).to_contain_text("adapter disabled", timeout=LONG)  # DPO's reference
    page.locator("#model-start-from input").click()  # the finished SFT run is offered (listed on focus)
    page.get_by_role("option", name=sft_run).click()
    expect(page.locator("#model-estimate")).to_contain_text(f"reference = the adapter of {sft_run}", timeout=90_000)
    set_steps(page, 24)
    expect_text(page, "#train-config", "DPO")
    expect_text(page, "#train-config", f"from the adapter of {sft_run}")
    page.locator("#train-start").click()
    expect(page.locator("#train-msg")).to_contain_text("Started", timeout=LONG)
    # the DPO run's own "done" (until the next poll the status line still shows the SFT run's)
    expect(page.locator("#train-status")).to_contain_text(re.compile(r"dpo-\d+-\d+\W+done"), timeout=LONG)
    expect(page.locator("#plot-grad")).to_contain_text("Rewards: chosen vs rejected", timeout=60_000)
    expect(page.locator("#plot-grad .scatterlayer .trace").first).to_be_attached(timeout=60_000)
    expect(page.locator("#plot-acc")).to_contain_text("Reward margin and accuracy")
    dpo_run = page.locator("#train-watch input").input_value()
    log = (blocks.finetune_ctx.workspace / "runs" / dpo_run / "train.log").read_text()
    assert f"runs/{sft_run}/adapter" in log and f"reference = the adapter of {sft_run}" in log
    shot(page, "dpo-02-trained")

    open_tab(page, "4 · Test")
    expect(page.locator("#test-run input")).not_to_have_value("", timeout=90_000)
    page.get_by_role("tab", name="Side by side").click()
    page.locator("#test-btn").click()
    expect(page.locator("#test-msg")).to_contain_text("Done", timeout=LONG)
    assert page.locator("#answer-tuned textarea").input_value().strip()
    page.get_by_role("tab", name="Batch evaluation").click()
    limit = page.locator("#eval-limit input")
    limit.fill("4")
    limit.press("Tab")
    page.locator("#eval-start").click()
    expect(page.locator("#eval-msg")).to_contain_text("Done", timeout=LONG)
    expect(page.locator("#eval-summary")).to_contain_text("preference accuracy")
    shot(page, "dpo-03-eval")
