"""What the browser tests share: Chromium's path, the long wait, and the steps a person takes on the page
(open a tab, the advanced settings, pick an objective or a run), with screenshots.

Screenshots go to test-artifacts/ at the repository root (gitignored), one per step. The fixtures `page` (a
headless Chromium) and `served_app` are in tests/ui/conftest.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"
BROWSER_MARKS = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed (apt-get install chromium)"),
]
LONG = 180_000  # ms: a whole demo run on a busy CPU


def settle(page, timeout: float = 60_000) -> None:
    """Wait until no component shows Gradio's pending (loading) state; on a time-out, name what stays pending."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    pending = "document.querySelectorAll('.pending, .wrap.translucent:not(.hide)')"
    try:
        page.wait_for_function(f"() => {pending}.length === 0", timeout=timeout)
    except PlaywrightTimeout:
        names = page.evaluate(
            f"() => [...{pending}].map(e => (e.closest('[id]') || e).id + ':' + e.className).slice(0, 10)"
        )
        raise AssertionError(f"still pending after {timeout / 1000:.0f} s: {names}") from None


def shot(page, name: str) -> None:
    """A screenshot once the page is idle. Waiting is best effort here: a component Gradio's front end
    leaves marked pending (seen now and then on the A/B tally after a run list refresh) is written to
    pending.txt; what the page must show is asserted by the steps themselves."""
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        settle(page, timeout=90_000)
    except AssertionError as exc:
        with (ARTIFACTS / "pending.txt").open("a", encoding="utf-8") as fh:
            fh.write(f"{name}: {exc}\n")
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def open_tab(page, label: str) -> None:
    page.get_by_role("tab", name=label).click()


def open_advanced(page, group: str = "Training") -> None:
    """Open the Model tab's "Advanced: every setting" and its tab of `group`. The accordion is clicked only
    while the tab is not shown (a second click would close it), and again if a busy page missed the click."""
    tab = page.get_by_role("tab", name=f"{group} (", exact=False)
    for _ in range(3):
        if tab.is_visible():
            break
        page.locator("#advanced").get_by_text("Advanced: every setting").click()
        try:
            tab.wait_for(state="visible", timeout=20_000)
        except Exception:  # noqa: BLE001 - a click lost on a loaded machine: try once more
            continue
    tab.click()


def choose_objective(page, label: str) -> None:
    """Pick a training objective in the Model tab, again if a busy page missed the click (the radio is
    re-drawn when the data changes)."""
    from playwright.sync_api import expect

    choice = page.locator("#model-objective label", has_text=label)
    for _ in range(3):
        choice.click()
        try:
            expect(choice.locator("input")).to_be_checked(timeout=20_000)
            return
        except AssertionError:  # a click lost on a loaded machine: try once more
            continue
    expect(choice.locator("input")).to_be_checked()


def loss_steps(page) -> list[float]:
    """The x values (steps) of the loss chart's first trace, as the page plots them."""
    return page.evaluate(
        "() => { const p = document.querySelector('#plot-loss .js-plotly-plot');"
        " return p && p.data && p.data.length ? Array.from(p.data[0].x) : []; }"
    )


def set_steps(page, steps: int) -> None:
    open_tab(page, "2 · Model & memory")
    box = page.locator("#cfg-max_steps input")
    if not box.is_visible():
        open_advanced(page)
    box.fill(str(steps))
    box.press("Tab")
    open_tab(page, "3 · Train")
    expect_text(page, "#train-config", f"max_steps {steps}")


def expect_text(page, selector: str, text, timeout: float = 30_000) -> None:
    from playwright.sync_api import expect

    expect(page.locator(selector)).to_contain_text(text, timeout=timeout)


def pick_run(page, name: str) -> None:
    """Choose a run in the Test tab's Run list."""
    box = page.locator("#test-run input")
    box.click()
    page.get_by_role("option", name=name, exact=True).click()
    from playwright.sync_api import expect

    expect(box).to_have_value(name, timeout=90_000)


def open_test_tab_on(page, url: str, name: str) -> None:
    """Load the page, let the Train tab's first poll move the Test tab's run to the run it shows (it would
    otherwise undo a pick made before it), then open the Test tab and pick `name`."""
    from playwright.sync_api import expect

    page.goto(url)
    open_tab(page, "3 · Train")
    expect(page.locator("#train-status")).to_contain_text("done", timeout=60_000)
    open_tab(page, "4 · Test")
    pick_run(page, name)
