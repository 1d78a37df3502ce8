"""Two browser sessions at once: exactly one training job runs, the other is told the GPU is busy;
compare, evaluation and merge refuse with a message while a job trains; downloads keep working."""

from __future__ import annotations

import zipfile

import pytest
from helpers_app import local_client, plain, served, start_values, wait_done, wait_for
from helpers_runs import make_run

from finetune.train.registry import current_job

pytestmark = pytest.mark.slow


def test_two_sessions_press_start_at_once(workspace):

    finished = make_run(workspace, run_name="finished")  # a run with an adapter, for Test and Export
    with served(workspace) as (blocks, client_a, url):
        client_b = local_client(url, download_files=str(workspace / "client-downloads-b"))
        base = blocks.finetune_ctx.base_config.replace(max_steps=5000, save_steps=1000, eval_steps=0, logging_steps=5)
        job_a = client_a.submit(*start_values(base.replace(run_name="alpha")), api_name="/start_training")
        job_b = client_b.submit(*start_values(base.replace(run_name="beta")), api_name="/start_training")
        messages = [plain(job_a.result(timeout=120)[0]), plain(job_b.result(timeout=120)[0])]

        started = [m for m in messages if m.startswith("Started")]
        busy = [m for m in messages if "Training did not start" in m]
        assert len(started) == 1 and len(busy) == 1, messages
        assert "Busy" in busy[0] and "is " in busy[0] and "Stop it or wait" in busy[0] and "Traceback" not in busy[0]
        winner = "alpha" if "alpha" in started[0] else "beta"
        assert f"the run '{winner}'" in busy[0]  # the busy message names the run that holds the GPU
        assert sorted(p.name for p in (workspace / "runs").iterdir()) == sorted(["finished", winner])
        assert current_job() is not None and current_job().run.name == winner

        # while it trains: comparing or evaluating would load a second model; both refuse with a message
        wait_for(lambda: client_b.predict(winner, api_name="/run_status")["state"] == "training", 120,
                 what="training")  # fmt: skip
        out = client_b.predict("finished", "Hello?", "", 0.0, 1.0, 8, 0, api_name="/compare")
        assert "No comparison" in plain(out[2]) and f"'{winner}' is training" in plain(out[2]), out[2]
        merge_msg, _ = client_b.predict("finished", api_name="/merge_model")
        assert "Merge failed" in plain(merge_msg) and "is training" in plain(merge_msg), merge_msg
        evaluation = client_b.predict("finished", None, 2, "all", "", 0.0, 1.0, 8, 0, api_name="/evaluate")
        assert "No evaluation" in plain(evaluation[0]) and "is training" in plain(evaluation[0])
        # what needs no model works: the adapter zip of a finished run
        zipped = client_b.predict("finished", api_name="/zip_adapter")
        with zipfile.ZipFile(zipped) as zf:
            assert "adapter_config.json" in zf.namelist()
        # the other session sees the run and can stop it (one workspace, one GPU)
        assert client_b.predict("", api_name="/run_status")["run"] == winner
        assert "Stop requested" in plain(client_b.predict(api_name="/stop_training"))
        assert wait_done(client_a, winner)["state"] == "stopped"
        # the GPU is free again: the loser's Start now works
        loser = "beta" if winner == "alpha" else "alpha"
        again = plain(client_b.predict(*start_values(base.replace(run_name=loser, max_steps=2)),
                                       api_name="/start_training")[0])  # fmt: skip
        assert again.startswith("Started"), again
        assert wait_done(client_b, loser)["state"] == "done"
    assert finished.has_adapter()


def test_two_threads_start_at_once_in_the_engine(workspace):
    """Without the app's queue (the CLI, an embedding program): the engine's registry lock lets one in."""
    import threading

    from finetune.config import RunConfig
    from finetune.errors import BusyError
    from finetune.train.start import start_training

    cfg = RunConfig(model_name_or_path="demo", quantization="none", max_steps=5000, save_steps=1000, eval_steps=0,
                    max_length=64, per_device_train_batch_size=2, gradient_accumulation_steps=1)  # fmt: skip
    barrier = threading.Barrier(2)
    outcomes: list = []

    def press_start(name: str) -> None:
        barrier.wait()
        try:
            outcomes.append(start_training(cfg.replace(run_name=name), workspace=workspace))
        except BusyError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=press_start, args=(n,)) for n in ("one", "two")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    jobs = [o for o in outcomes if not isinstance(o, Exception)]
    refused = [o for o in outcomes if isinstance(o, BusyError)]
    assert len(jobs) == 1 and len(refused) == 1, outcomes
    assert f"'{jobs[0].run.name}'" in str(refused[0])
    jobs[0].stop()
    assert jobs[0].wait(120) == "stopped"
    assert len(list((workspace / "runs").iterdir())) == 1
