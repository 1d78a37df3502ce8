"""The whole flow in a real (headless) Chromium, as a person would do it: data, model, train (with a
reload), side by side, blind A/B, batch evaluation, export.
"""

from __future__ import annotations

import re

from helpers_browser import BROWSER_MARKS, LONG, open_advanced, open_tab, shot

pytestmark = BROWSER_MARKS


def test_whole_flow(served_app, page):
    from playwright.sync_api import expect

    blocks, url = served_app
    page.goto(url)

    # 1. Data: the sample dataset is loaded on first open
    expect(page.locator("#data-summary")).to_contain_text("110", timeout=60_000)
    expect(page.locator("#data-detected")).to_contain_text("messages")
    expect(page.locator("#data-hist .js-plotly-plot")).to_be_visible()
    page.locator("#data-sample-btn").click()  # one click away, also after other choices
    expect(page.locator("#data-summary")).to_contain_text("usable")
    shot(page, "01-data")
    page.get_by_role("tab", name="As the model sees it").click()
    expect(page.locator("#data-template .seg-trained").first).to_be_visible()
    shot(page, "02-data-template")

    # 2. Model & memory: defaults from the suggested preset; make the run short
    open_tab(page, "2 · Model & memory")
    expect(page.locator("#model-hardware")).to_contain_text("Hardware")
    open_advanced(page)
    steps = page.locator("#cfg-max_steps input")
    steps.fill("40")
    steps.press("Tab")
    logging_steps = page.locator("#cfg-logging_steps input")
    page.get_by_role("tab", name="Logging & checkpoints", exact=False).click()
    logging_steps.fill("2")
    logging_steps.press("Tab")
    expect(page.locator("#model-estimate")).to_contain_text(re.compile("estimated peak", re.I), timeout=90_000)
    # the plan: what auto decided for this machine, and why, before Start
    expect(page.locator("#model-estimate")).to_contain_text("what auto decided before Start")
    expect(page.locator("#model-estimate")).to_contain_text("gradient checkpointing")
    shot(page, "03-model")

    # 3. Train: start, and see the loss chart fill
    open_tab(page, "3 · Train")
    expect(page.locator("#train-config")).to_contain_text("max_steps 40", timeout=90_000)
    page.locator("#train-start").click()
    expect(page.locator("#train-msg")).to_contain_text("Started", timeout=LONG)
    expect(page.locator("#plot-loss .scatterlayer .trace").first).to_be_attached(timeout=LONG)
    expect(page.locator("#train-progress .ft-progress-text")).to_contain_text("step")
    shot(page, "04-training")

    # reload: the page reattaches to the run and redraws the whole curve
    page.reload()
    open_tab(page, "3 · Train")
    expect(page.locator("#train-config")).to_contain_text("max_steps 40", timeout=90_000)  # settings kept
    expect(page.locator("#plot-loss .scatterlayer .trace").first).to_be_attached(timeout=60_000)
    shot(page, "05-reattached")
    expect(page.locator("#train-status")).to_contain_text("done", timeout=LONG)
    expect(page.locator("#run-history")).to_contain_text("done")
    shot(page, "06-done")

    # 4. Test: both answers, side by side
    open_tab(page, "4 · Test")
    expect(page.locator("#test-run input")).not_to_have_value("", timeout=90_000)
    page.get_by_role("tab", name="Side by side").click()  # the Test tab opens on the chat
    page.locator("#test-btn").click()
    expect(page.locator("#test-msg")).to_contain_text("Done", timeout=LONG)
    base = page.locator("#answer-base textarea").input_value()
    tuned = page.locator("#answer-tuned textarea").input_value()
    assert base.strip() and tuned.strip()
    expect(page.locator("#test-stats")).to_contain_text("tokens in")  # each answer's length and time
    expect(page.locator("#test-diff")).to_contain_text(re.compile("Word diff|identical"))
    shot(page, "07-test")

    # 4b. Blind A/B: one vote with a shortcut key, one with a button; sides revealed, tally counted
    page.get_by_role("tab", name="Blind A/B").click()
    expect(page.locator("#ab-tally")).to_contain_text("No votes yet")
    expect(page.locator("#ab-tie")).to_be_disabled()  # nothing to vote on yet
    prompt = page.locator("#ab-prompt textarea")
    prompt.fill("What is 17 plus 4?")
    page.locator("#ab-new").click()
    expect(page.locator("#ab-tie")).to_be_enabled(timeout=LONG)
    assert page.locator("#ab-answer-a textarea").input_value().strip()
    expect(page.locator("#ab-reveal")).not_to_contain_text("was the")  # sides hidden before the vote
    shot(page, "08-ab-pair")
    prompt.press("3")  # typed into a text box: not a vote
    expect(prompt).to_have_value("What is 17 plus 4?3")
    expect(page.locator("#ab-tie")).to_be_enabled()
    page.evaluate("document.activeElement.blur()")
    page.keyboard.press("3")  # tie
    expect(page.locator("#ab-reveal")).to_contain_text("Vote saved: Tie", timeout=90_000)
    expect(page.locator("#ab-reveal")).to_contain_text("was the base model")
    expect(page.locator("#ab-tally")).to_contain_text("1 vote(s) in all")
    expect(page.locator("#ab-tie")).to_be_disabled()  # one vote per pair
    page.keyboard.press("3")  # the buttons are disabled now: no second vote on the same pair
    prompt.fill("Name three colours.")
    page.locator("#ab-new").click()
    expect(page.locator("#ab-bad")).to_be_enabled(timeout=LONG)
    button = page.locator("#ab-a") if page.locator("#ab-a").is_enabled() else page.locator("#ab-bad")
    button.click()
    expect(page.locator("#ab-tally")).to_contain_text("2 vote(s) in all", timeout=90_000)
    expect(page.locator("#ab-tally")).to_contain_text("1 tie(s)")
    expect(page.locator("#ab-plot .js-plotly-plot")).to_be_visible()
    shot(page, "09-ab-voted")

    # 4c. Batch evaluation on the validation split, 3 rows
    page.get_by_role("tab", name="Batch evaluation").click()
    limit = page.locator("#eval-limit input")
    limit.fill("3")
    limit.press("Tab")
    page.locator("#eval-start").click()
    expect(page.locator("#eval-msg")).to_contain_text("Done: 3 rows", timeout=LONG)
    expect(page.locator("#eval-summary")).to_contain_text("ROUGE-L")
    expect(page.locator("#eval-chart .js-plotly-plot")).to_be_visible()
    expect(page.locator("#eval-table [role=grid]")).to_have_attribute("aria-rowcount", "4")  # header + 3 rows
    expect(page.locator("#eval-files")).to_contain_text(".jsonl")
    shot(page, "10-eval")

    # 5. Export: merge with progress, then download the zip
    open_tab(page, "5 · Export")
    page.locator("#export-merge-btn").click()
    expect(page.locator("#export-merge-msg")).to_contain_text("Merged model saved", timeout=LONG)
    page.locator("#export-merged-zip-btn").click()
    expect(page.locator("#export-merged-file")).to_contain_text("-merged", timeout=60_000)
    page.locator("#export-zip-btn").click()
    expect(page.locator("#export-adapter-file")).to_contain_text("-adapter", timeout=60_000)
    expect(page.locator("#export-card")).to_contain_text("Training configuration")
    shot(page, "11-export")
