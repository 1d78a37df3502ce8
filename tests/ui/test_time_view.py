"""Time and cost on the page: the Model tab's predicted time, the Start line, a finished run's predicted
against actual (status area and history), the speed chart, tracker links; the pure helpers too."""

from __future__ import annotations

import os
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers_browser import CHROMIUM, open_advanced

from ui import time_view, trackers_view


def fake_ctx(record=None, links=("none", []), missing=""):
    timing = SimpleNamespace(
        record=lambda name: record or {},
        tracker_links=lambda name: links,
        tracker_missing=lambda report_to: missing,
    )
    return SimpleNamespace(studio=SimpleNamespace(timing=timing))


RECORD = {
    "predicted": {"predicted_seconds": 10.0, "throughput": {"device": "cpu"}},
    "actual": {"seconds": 12.0, "cpu_seconds": 9.5, "tokens_per_s": 3000.0, "mean_achieved_gflops": 2.5, "cost": 0.5},
}


def test_history_cells_and_the_run_line():
    assert time_view.history_cells(RECORD) == ("10 s", "12 s (+20%)")
    assert time_view.history_cells({}) == ("", "")
    line = time_view.run_timing_md(fake_ctx(RECORD), "r1")
    for text in (
        "predicted **10 s**",
        "measured **12 s** (+20%)",
        "3,000 tokens/s",
        "2.50 GFLOP/s",
        "$0.50",
        "CPU time 9.5 s (-5%)",
    ):
        assert text in line
    assert time_view.run_timing_md(fake_ctx({}), "r1") == ""
    no_prediction = time_view.run_timing_md(fake_ctx({"predicted": None, "predicted_why": "no peak figure"}), "r")
    assert "no prediction (no peak figure)" in no_prediction


def test_the_progress_line_shows_hardware_use_beside_tokens_per_second():
    from ui.train_tab import progress_html

    cpu = progress_html(
        {"state": "training", "step": 3, "total_steps": 9, "tokens_per_s": 1200, "achieved_gflops": 2.25}
    )
    assert "1,200 tokens/s · 2.25 GFLOP/s" in cpu
    gpu = progress_html({"state": "training", "tokens_per_s": 9000, "mfu": 0.231, "achieved_gflops": 228.0})
    assert "9,000 tokens/s · MFU 23.1%" in gpu and "GFLOP/s" not in gpu


def test_tracker_lines():
    links = ("wandb", [{"name": "Weights & Biases", "text": "this run on wandb.ai", "url": "https://wandb.ai/x/y"}])
    assert "[this run on wandb.ai](https://wandb.ai/x/y)" in trackers_view.links_md(fake_ctx(links=links), "r", "none")
    missing = trackers_view.links_md(fake_ctx(missing="report_to: MLflow needs `mlflow-skinny`"), None, "mlflow")
    assert missing.startswith("⚠") and "mlflow-skinny" in missing
    assert "will also go to **trackio**" in trackers_view.links_md(fake_ctx(), None, "trackio")


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed")
def test_predicted_time_before_start_and_predicted_vs_actual_after(workspace):
    from helpers_app import served
    from playwright.sync_api import expect, sync_playwright

    with served(workspace) as (_, _, url), sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        page.goto(url)
        expect(page.locator("#data-summary")).to_contain_text("110", timeout=60_000)
        page.get_by_role("tab", name="2 · Model & memory").click()
        estimate = page.locator("#model-estimate")
        # the first estimate on a machine calibrates the CPU (seconds; cached for every later one)
        expect(estimate).to_contain_text("Predicted time: about", timeout=180_000)
        expect(estimate).to_contain_text("measured on this CPU")
        expect(estimate).to_contain_text("steps")
        price = page.locator("#price-per-hour input")
        price.fill("3600")
        price.press("Tab")
        expect(estimate).to_contain_text(
            re.compile(r"\$[0-9.,]+\*\* at \$3,600.00/h|\$[0-9.,]+ at \$3,600"), timeout=60_000
        )
        open_advanced(page)
        steps = page.locator("#cfg-max_steps input")
        steps.fill("20")
        steps.press("Tab")
        expect(estimate).to_contain_text("20 steps", timeout=60_000)
        page.get_by_role("tab", name="3 · Train").click()
        expect(page.locator("#train-config")).to_contain_text("Predicted: about", timeout=60_000)
        expect(page.locator("#train-config")).to_contain_text("20 steps")
        page.locator("#train-start").click()
        expect(page.locator("#train-status")).to_contain_text("done", timeout=240_000)
        timing = page.locator("#train-timing")
        expect(timing).to_contain_text("predicted", timeout=60_000)
        expect(timing).to_contain_text("measured")
        expect(timing).to_contain_text("GFLOP/s")
        expect(page.locator("#plot-speed .scatterlayer .trace").first).to_be_attached(timeout=60_000)
        expect(page.locator("#run-history")).to_contain_text(re.compile(r"\([+-]\d+%\)"), timeout=60_000)
        artifacts = Path(__file__).resolve().parents[2] / "test-artifacts"  # gitignored, as the browser tests'
        artifacts.mkdir(exist_ok=True)
        page.screenshot(path=str(artifacts / "time-view.png"), full_page=True)
        browser.close()
