"""The Export tab's model card is drawn fresh whenever it is looked at: after Stop then Resume to the end,
the run keeps its place in the list (no change event), and the card must still show the final numbers."""

from __future__ import annotations

import pytest
from helpers_app import served
from helpers_runs import make_run

from finetune.runs import Run

pytestmark = pytest.mark.slow


def test_refresh_and_the_tab_itself_redraw_the_card_of_a_run_that_went_on(workspace):
    run = make_run(workspace, run_name="stopped-then-resumed")
    run.write_status("stopped", "Stopped at step 2", step=2, total_steps=4)
    with served(workspace) as (blocks, client, _url):
        _, card = client.predict("stopped-then-resumed", api_name="/refresh_export")
        assert "2.2500 (step 2)" in card and "stopped" in card
        resumed = Run(run.path)  # Resume ran to the end (here or in another process)
        resumed.append_metrics({"step": 4, "loss": 0.0532})
        resumed.write_status("done", "Finished 4 steps", step=4, total_steps=4)
        dropdown, card = client.predict("stopped-then-resumed", api_name="/refresh_export")
        assert "0.0532 (step 4)" in card and "| done |" in card and "| 4 |" in card
        tab = blocks.finetune_ctx.c["export_tab_item"]
        selects = [fn for fn in blocks.fns.values() if any(t[0] == tab._id for t in fn.targets)]
        assert selects and all(blocks.finetune_ctx.c["card"] in fn.outputs for fn in selects)


def test_the_merged_model_download_is_offered_only_once_a_merge_exists(workspace):
    from finetune.studio import Studio
    from ui.export_tab import merged_zip_button
    from ui.state import Ctx

    run = make_run(workspace, run_name="to-merge")
    ctx = Ctx(studio=Studio(workspace))
    assert merged_zip_button(ctx, "to-merge").interactive is False
    assert merged_zip_button(ctx, None).interactive is False and merged_zip_button(ctx, "gone").interactive is False
    merged = run.path / "exports" / "merged"
    merged.mkdir(parents=True)
    (merged / "config.json").write_text("{}")
    assert merged_zip_button(ctx, "to-merge").interactive is True
