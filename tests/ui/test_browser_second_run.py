"""A second and a third run on the same page in a real (headless) Chromium: toasts, charts, the log,
a reload during training, the run history.
"""

from __future__ import annotations

from helpers_browser import BROWSER_MARKS, LONG, loss_steps, open_tab, set_steps, shot

pytestmark = BROWSER_MARKS


def test_second_run_preset_toast_log_and_reload(served_app, page):
    """Issue 12's browser defects: one toast per preset pick, charts that follow a second Start on the
    same page, the log scrolled to its newest line, a reload during training landing on Train."""
    from playwright.sync_api import expect

    blocks, url = served_app
    page.goto(url)
    expect(page.locator("#data-summary")).to_contain_text("110", timeout=60_000)
    open_tab(page, "2 · Model & memory")
    page.locator("#model-preset input").click()
    page.get_by_role("option", name="cpu").click()
    expect(page.locator("[data-testid=toast-body]").first).to_contain_text("Preset cpu applied")
    page.wait_for_timeout(1500)
    toasts = " ".join(page.locator("[data-testid=toast-body]").all_inner_texts())
    assert toasts.count("Preset cpu applied") == 1, toasts

    set_steps(page, 30)
    page.locator("#train-start").click()
    expect(page.locator("#train-status")).to_contain_text("done", timeout=LONG)
    page.wait_for_function("() => { const p = document.querySelector('#plot-loss .js-plotly-plot');"
                           " return p && p.data && p.data[0] && Math.max(...p.data[0].x) >= 30; }", timeout=90_000)  # fmt: skip
    set_steps(page, 8)
    page.locator("#train-start").click()
    expect(page.locator("#train-status")).to_contain_text("8 steps", timeout=LONG)
    page.wait_for_function("() => { const p = document.querySelector('#plot-loss .js-plotly-plot');"
                           " return p && p.data && p.data[0] && Math.max(...p.data[0].x) <= 8; }", timeout=90_000)  # fmt: skip
    assert max(loss_steps(page)) <= 8  # the second run's curve, not the first one's
    log = page.locator("#train-log textarea")
    page.wait_for_function(
        "() => { const t = document.querySelector('#train-log textarea');"
        " return t && t.scrollHeight > t.clientHeight && t.scrollTop + t.clientHeight >= t.scrollHeight - 4; }",
        timeout=10_000,
    )
    assert "final state" in log.input_value()
    shot(page, "12-second-run")

    set_steps(page, 2000)  # long enough to still train after the reload
    # Start comes back with the page's next poll after the run ends; in one CI run it was still disabled 60 s on
    expect(page.locator("#train-start")).to_be_enabled(timeout=LONG)
    page.locator("#train-start").click()
    expect(page.locator("#train-msg")).to_contain_text("Started", timeout=LONG)
    page.reload()
    expect(page.get_by_role("tab", name="3 · Train")).to_have_attribute("aria-selected", "true", timeout=90_000)
    page.locator("#train-stop").click()
    expect(page.locator("#train-status")).to_contain_text("stopped", timeout=LONG)
    shot(page, "13-reload-lands-on-train")

    # the buttons follow the state: nothing trains, and the stopped run has a checkpoint to resume from
    expect(page.locator("#train-stop")).to_be_disabled(timeout=90_000)
    expect(page.locator("#train-resume")).to_be_enabled()
    expect(page.locator("#train-start")).to_be_enabled()
    # the history: method and data columns, a filter, rename and delete (confirmed) of the run shown
    history = page.locator("#run-history")
    expect(history).to_contain_text("qlora")
    expect(history).to_contain_text("sample")
    page.locator("#history-filter textarea").fill("stopped")
    page.locator("#history-filter textarea").press("Enter")
    expect(history).not_to_contain_text("done", timeout=90_000)
    page.locator("#history-rename-to textarea").fill("my-stopped-run")
    page.locator("#history-rename-btn").click()
    expect(page.locator("#history-msg")).to_contain_text("my-stopped-run", timeout=90_000)
    expect(history).to_contain_text("my-stopped-run")
    page.locator("#history-delete-btn").click()
    expect(page.locator("#history-delete-question")).to_contain_text("my-stopped-run")
    page.locator("#history-delete-yes").click()
    expect(page.locator("#history-msg")).to_contain_text("Deleted", timeout=90_000)
    assert not (blocks.finetune_ctx.workspace / "runs" / "my-stopped-run").exists()
    shot(page, "14-history-rename-delete")
