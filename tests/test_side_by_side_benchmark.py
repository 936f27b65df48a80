"""benchmarks/side_by_side.py: the summary arithmetic and the per-call record (no timing is asserted)."""

import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def sbs():
    spec = importlib.util.spec_from_file_location("side_by_side", os.path.join(ROOT, "benchmarks", "side_by_side.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _process(variant, model, round_, mean_rate, median_rate):
    result = {"task": "infer", "batch": 1, "images_per_s": mean_rate, "images_per_s_median_call": median_rate}
    return {"variant": variant, "round": round_, "info": {"model": model}, "results": [result]}


def test_summary_gives_the_ratio_of_medians_and_the_median_call_ratio(sbs):
    processes = [
        # Round 1: one stalled package call halves the package's mean rate, not its median call.
        _process("package", "fc_densenet103", 0, 1.6, 1.6),
        _process("package", "fc_densenet103", 1, 0.8, 1.7),
        _process("package", "fc_densenet103", 2, 1.8, 1.8),
        _process("peer", "fc_densenet103", 0, 1.0, 1.0),
        _process("peer", "fc_densenet103", 1, 1.0, 1.0),
        _process("peer", "fc_densenet103", 2, 0.8, 0.85),
        {"variant": "package", "round": 3, "error": "killed"},  # a failed process counts nowhere
    ]
    (line,) = sbs.summarize(processes)
    assert line["package_images_per_s"] == 1.6  # median of 1.6, 0.8, 1.8
    assert line["peer_images_per_s"] == 1.0
    assert line["ratio"] == 1.6
    assert line["ratio_per_round"] == [1.6, 0.8, 2.25]
    assert line["ratio_median_call"] == 1.7  # median 1.7 over median 1.0


def test_summary_without_the_peer_has_rates_but_no_ratio(sbs):
    (line,) = sbs.summarize([_process("package", "m", 0, 2.0, 2.5)])
    assert line["package_images_per_s"] == 2.0 and line["peer_images_per_s"] is None
    assert "ratio" not in line and "ratio_median_call" not in line


def test_timed_calls_record_every_call_and_the_rates(sbs, monkeypatch):
    clock = iter([0.0, 2.0, 2.0, 3.0, 3.0, 4.0])  # timed calls of 2 s, 1 s, 1 s (the untimed first one apart)
    monkeypatch.setattr(sbs.time, "perf_counter", lambda: next(clock))
    steal = iter([10.0, 12.5])
    monkeypatch.setattr(sbs, "_host_steal_s", lambda: next(steal))
    monkeypatch.setattr(sbs, "_usage", lambda: {"wall": 0.0, "user": 0.0, "system": 0.0, "minflt": 0})
    first, timed = sbs._time_calls(lambda: None, 3)
    assert timed["call_s"] == [2.0, 1.0, 1.0]
    assert timed["host_steal_s"] == 2.5
    timed["wall_s"] = 4.0  # the mocked getrusage clock is frozen; the real one spans the three calls
    result = sbs._result("infer", 2, first, timed, 3)
    assert result["images_per_s"] == 1.5  # 6 images in 4 s
    assert result["images_per_s_median_call"] == 2.0  # 2 images in the median call of 1 s
    assert result["s_per_call"] == pytest.approx(4.0 / 3, abs=1e-3)


def test_host_steal_is_seconds_or_none(sbs):
    steal = sbs._host_steal_s()
    assert steal is None or steal >= 0
