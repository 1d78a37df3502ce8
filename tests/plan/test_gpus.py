"""The GPU peak table, measured efficiencies from bench results, and the Spaces price presets."""

from __future__ import annotations

import json

from finetune.plan import gpus


def test_names_find_their_own_row_not_a_prefix():
    cases = {
        "NVIDIA H100 80GB HBM3": 989.0,
        "NVIDIA H100 PCIe": 756.0,
        "NVIDIA H200": 989.0,
        "NVIDIA A100-SXM4-80GB": 312.0,
        "NVIDIA A10G": 70.0,
        "NVIDIA A10": 125.0,
        "NVIDIA L40S": 362.0,
        "NVIDIA L40": 181.0,
        "NVIDIA L4": 121.0,
        "Tesla T4": 65.0,
        "NVIDIA GeForce RTX 4090": 165.2,
        "NVIDIA GeForce RTX 3090": 71.0,
        "Apple M2 Pro": 6.8,
        "Apple M1": 2.6,
    }
    for name, tflops in cases.items():
        assert gpus.peak_for(name).tflops == tflops, name
    assert gpus.peak_for("Apple M3 Max") is None  # Apple publishes no figure: no guess
    assert all(peak.source for peak in gpus.PEAKS)


def test_efficiency_is_measured_from_bench_results_else_a_stated_default(tmp_path):
    default = gpus.efficiency_for("NVIDIA L4")
    assert not default.measured and gpus.NOT_MEASURED in default.source
    result = {"engine_mfu": 0.31, "machine": {"summary": "CUDA: NVIDIA L4 (22.0 GB, bf16)"}}
    (tmp_path / "gpu_check_l4").mkdir()
    (tmp_path / "gpu_check_l4" / "bench.json").write_text(json.dumps(result))
    (tmp_path / "other.json").write_text(json.dumps({"engine_mfu": 0.5, "machine": {"summary": "NVIDIA H100"}}))
    measured = gpus.measured_efficiency("NVIDIA L4", tmp_path)
    assert measured.measured and measured.value == 0.31 and "bench.json" in measured.source
    assert gpus.measured_efficiency("NVIDIA A10G", tmp_path) is None


def test_space_hardware_guess_and_prices():
    a10g = gpus.guess_space_hardware("NVIDIA A10G", 1, 4)
    assert a10g.flavor == "a10g-small" and a10g.price_per_hour == 1.0
    assert gpus.guess_space_hardware("NVIDIA A10G", 1, 12).flavor == "a10g-large"
    assert gpus.guess_space_hardware("NVIDIA L4", 4, 48).flavor == "l4x4"
    assert gpus.guess_space_hardware("", 0, 2).flavor == "cpu-basic"
    assert gpus.guess_space_hardware("NVIDIA H100", 1, 24) is None  # not offered in the table
