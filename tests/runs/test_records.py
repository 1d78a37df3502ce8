"""The typed records reader: every file of a run folder read into typed values, whatever it holds; what
cannot be read is a Damage naming the file and the line, never an exception."""

from __future__ import annotations

import json
import zipfile

import pytest

from finetune.runs.metrics_buffer import MetricsBuffer
from finetune.runs.records import (
    checkpoint_problems,
    file_problem,
    read_metrics,
    read_status,
    safetensors_problem,
    trainer_state_problem,
)

GOOD = '{"step": 1, "loss": 2.5, "epoch": 0.1}\n'


def _write(path, data: bytes | str) -> None:
    path.write_bytes(data.encode() if isinstance(data, str) else data)


@pytest.mark.parametrize(
    "line, reason",
    [
        ('{"step": "x", "loss": "y"}\n', "has no usable step (step is 'x')"),
        (b"\xff\n", "is not UTF-8 text (byte 0xff at column 1)"),
        ("null\n", "is JSON null, not a record"),
        ("[1, 2]\n", "is a JSON array, not a record"),
        ('{"loss": 1.0}\n', "has no usable step (step is missing)"),
        ('{"step": 1.5}\n', "has no usable step (step is '1.5')"),
        ('{"step": -3}\n', "has no usable step"),
        ("{not json\n", "is not JSON"),
        ('{"step": ' + "9" * 5000 + "}\n", "is not JSON"),
    ],
)
def test_a_bad_metrics_line_is_skipped_counted_and_named(tmp_path, line, reason):
    path = tmp_path / "metrics.jsonl"
    _write(path, GOOD.encode() + (line if isinstance(line, bytes) else line.encode()) + GOOD.replace("1", "3").encode())
    log = read_metrics(path)
    assert [r["step"] for r in log.records] == [1, 3]  # the lines around it still count
    assert log.damaged_lines == 1 and log.damage[0].line == 2 and reason in log.damage[0].reason
    assert str(log.damage[0]).startswith("metrics.jsonl line 2: ")


def test_values_that_are_not_numbers_are_dropped_and_named_the_rest_kept(tmp_path):
    path = tmp_path / "metrics.jsonl"
    _write(path, '{"step": 4, "loss": "y", "lr": 0.1, "flag": true, "eval_loss": NaN}\n')
    log = read_metrics(path)
    (record,) = log.records
    assert record["step"] == 4 and record["lr"] == 0.1 and "loss" not in record and "flag" not in record
    assert record["eval_loss"] != record["eval_loss"]  # NaN: a fact of the run (a loss that diverged), kept
    assert "'loss' is 'y'" in log.damage[0].reason and "'flag' is 'True'" in log.damage[0].reason


def test_a_last_line_cut_short_is_pending_until_its_writer_finishes_it(tmp_path):
    path = tmp_path / "metrics.jsonl"
    _write(path, GOOD + '{"step": 2, "lo')
    log = read_metrics(path)
    assert [r["step"] for r in log.records] == [1] and log.damaged_lines == 0
    assert log.pending is not None and log.pending.line == 2 and "cut short" in log.pending.reason
    assert log.end_offset == len(GOOD)  # not consumed: the next read starts at the cut line
    with open(path, "a") as fh:
        fh.write('ss": 1.5}\n')
    more = read_metrics(path, offset=log.end_offset, first_line=log.next_line)
    assert [r["step"] for r in more.records] == [2] and more.pending is None and more.damaged_lines == 0


def test_the_buffer_follows_a_file_another_process_writes(tmp_path):
    path = tmp_path / "metrics.jsonl"
    writer, reader = MetricsBuffer(path), MetricsBuffer(path)
    writer.append({"step": 1, "loss": 3.0})
    assert [r["step"] for r in reader.records()] == [1]
    writer.append({"step": 2, "loss": 2.0})  # appended elsewhere: only the new line is read
    assert [r["step"] for r in reader.records()] == [1, 2]
    path.write_text(GOOD)  # rewritten (a resume cuts the log back): read whole again
    assert [r["step"] for r in reader.records()] == [1] and reader.records()[0]["loss"] == 2.5
    with open(path, "ab") as fh:
        fh.write(b'{"step": "x"}\n' + GOOD.replace("1", "5").encode())
    assert [r["step"] for r in reader.records()] == [1, 5]
    lines, count = reader.damage()
    assert count == 1 and lines[0].line == 2
    assert reader.summary() == {}  # a damaged log is never summarized into status.json


def test_the_writers_summary_names_the_file_it_summarizes(tmp_path):
    path = tmp_path / "metrics.jsonl"
    buffer = MetricsBuffer(path)
    buffer.append({"step": 1, "loss": 3.0, "eval_loss": 3.5})
    buffer.append({"step": 2, "loss": 2.0})
    summary = buffer.summary()
    st = path.stat()
    assert summary == {
        "final_loss": 2.0,
        "final_eval_loss": 3.5,
        "metrics_bytes": st.st_size,
        "metrics_mtime_ns": st.st_mtime_ns,
    }


def test_status_fields_have_their_types_or_are_named_as_damage(tmp_path):
    path = tmp_path / "status.json"
    _write(path, json.dumps({"state": "done", "step": "x", "total_steps": 30.0, "created_at": "never", "extra": [1]}))
    status, damage = read_status(path)
    assert status == {"state": "done", "total_steps": 30, "extra": [1]}
    assert sorted(str(d) for d in damage) == [
        "status.json: created_at is 'never', not a number",
        "status.json: step is 'x', not a whole number",
    ]
    _write(path, '{"state": "exploded"}')
    status, damage = read_status(path)
    assert "state" not in status and "not a state a run can be in" in damage[0].reason


@pytest.mark.parametrize(
    "data, reason",
    [
        (b'{"state": "done", "step"', "is not valid JSON"),
        (b"", "is empty"),
        (b"\xff\xfe", "is not UTF-8 text"),
        (b"[1]", "holds a JSON array, not an object"),
    ],
)
def test_an_unreadable_status_is_damage_not_an_exception(tmp_path, data, reason):
    path = tmp_path / "status.json"
    _write(path, data)
    status, damage = read_status(path)
    assert status == {} and reason in damage[0].reason and damage[0].file == "status.json"


def _safetensors(path, tensors: dict[str, list[int]]) -> None:
    """A real safetensors file (float32 zeros), written by the library."""
    import torch
    from safetensors.torch import save_file

    save_file({name: torch.zeros(shape) for name, shape in tensors.items()}, str(path))


def test_a_truncated_safetensors_file_is_named_from_its_header(tmp_path):
    path = tmp_path / "adapter_model.safetensors"
    _safetensors(path, {"a.weight": [64, 8], "b.weight": [8, 64]})
    assert safetensors_problem(path) == ""
    whole = path.read_bytes()
    _write(path, whole[: len(whole) - 100])
    assert safetensors_problem(path) == f"is cut short ({len(whole) - 100:,} of {len(whole):,} bytes)"
    _write(path, whole[:5])
    assert "not even a header" in safetensors_problem(path)
    _write(path, whole[:40])  # the header itself cut
    assert "cut short" in safetensors_problem(path) or "damaged header" in safetensors_problem(path)


def test_torch_files_and_configs_of_a_checkpoint_are_checked(tmp_path):
    checkpoint = tmp_path / "checkpoints" / "checkpoint-30"
    checkpoint.mkdir(parents=True)
    _write(checkpoint / "trainer_state.json", '{"global_step": 30}')
    with zipfile.ZipFile(checkpoint / "optimizer.pt", "w") as zf:  # torch.save writes a zip archive
        zf.writestr("data.pkl", b"x" * 1000)
    _safetensors(checkpoint / "adapter_model.safetensors", {"w.weight": [4, 4]})
    _write(checkpoint / "adapter_config.json", '{"r": 8}')
    assert checkpoint_problems(checkpoint, tmp_path) == []
    optimizer = (checkpoint / "optimizer.pt").read_bytes()
    _write(checkpoint / "optimizer.pt", optimizer[:-30])
    _write(checkpoint / "trainer_state.json", '{"global_step": 30, "log_hist')
    problems = [str(p) for p in checkpoint_problems(checkpoint, tmp_path)]
    assert problems[0].startswith("checkpoints/checkpoint-30/trainer_state.json line 1: is not valid JSON")
    assert any(p.startswith("checkpoints/checkpoint-30/optimizer.pt: is cut short") for p in problems)
    _write(checkpoint / "trainer_state.json", '{"global_step": "thirty"}')
    assert "global_step is 'thirty'" in str(trainer_state_problem(checkpoint, tmp_path))
    _write(checkpoint / "adapter_config.json", "{")
    assert file_problem(checkpoint / "adapter_config.json").startswith("is not valid JSON")


def test_prediction_record_keeps_its_figures_numbers(tmp_path):
    from finetune.runs.records import read_prediction

    path = tmp_path / "prediction.json"
    assert read_prediction(path) == ({}, [])  # an older run has none: nothing is damaged
    path.write_text('{"predicted": {"predicted_seconds": "x", "predicted_steps": 4, "source": "calibrated"},'
                    ' "actual": [1], "extra": {"seconds": 1e999}}')  # fmt: skip
    record, damage = read_prediction(path)
    assert record == {"predicted": {"predicted_steps": 4, "source": "calibrated"}, "extra": {}}
    assert [d.reason for d in damage] == [
        "predicted.predicted_seconds is 'x', not a number",
        "actual is a JSON array, not an object",
        "extra.seconds is 'inf', not a number",
    ]
