"""invoke bench, host side: options, parsing the target script's records, tables and the plot."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from rich.console import Console

from nnpack_toolchain import bench, bench_report
from nnpack_toolchain.errors import ConfigurationError


def record(network: str, batch: int, never: float, always: float, auto: float) -> dict:
    seconds = {"never": batch / never, "always": batch / always, "auto": batch / auto}
    return {"kind": "network", "network": network, "batch": batch, "seconds": seconds,
            "images_per_second": {"never": never, "always": always, "auto": auto}, "threads": "2"}


def render(table) -> str:
    console = Console(width=200, record=True)
    console.print(table)
    return console.export_text()


def test_records_are_parsed_and_the_pypi_column_merged() -> None:
    output = "noise\nRESULT " + json.dumps(record("vgg16", 1, 2.0, 4.0, 6.0)) + "\n"
    records = bench.parse_records(output)
    bench.merge_column(records, {"network": "vgg16", "batch": 1, "seconds": {"pypi": 0.2},
                                 "images_per_second": {"pypi": 5.0}, "images_per_second_range": {"pypi": [4.0, 6.0]},
                                 "samples": {"pypi": [0.25, 0.2, 1 / 6]}}, "pypi")
    bench.merge_column(records, {"network": "alexnet", "batch": 1, "seconds": {"pypi": 9.0},
                                 "images_per_second": {"pypi": 9.0}}, "pypi")  # no such row: nothing merged
    assert records[0]["images_per_second"] == {"never": 2.0, "always": 4.0, "auto": 6.0, "pypi": 5.0}
    assert records[0]["images_per_second_range"]["pypi"] == [4.0, 6.0]
    assert records[0]["samples"]["pypi"] == [0.25, 0.2, 1 / 6]


def test_network_table_shows_ratios_against_mxnet() -> None:
    results = {"target": "x86_64", "host_cpu": "Test CPU", "threads": 2,
               "networks": [record("alexnet", 1, 20.0, 10.0, 40.0)]}
    text = render(bench_report.network_table(results))
    assert "0.50x" in text and "2.00x" in text and "Test CPU" in text


def test_plot_is_written(tmp_path: Path) -> None:
    results = {"target": "x86_64", "host_cpu": "Test CPU", "threads": 2,
               "networks": [record("alexnet", b, 10.0 * b, 12.0 * b, 15.0 * b) for b in (1, 2, 4)]}
    path = bench.plot(results, tmp_path / "bench.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob("*.tmp*"))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"networks": ("lenet",)}, "unknown network"),
    ({"batches": (0,)}, "positive"),
    ({"iterations": 0}, "at least 1"),
])
def test_bad_options_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        bench.BenchOptions(**kwargs)


def test_int_lists() -> None:
    assert bench.parse_int_list("1, 2,4", "--batches") == (1, 2, 4)
    with pytest.raises(ConfigurationError, match="--batches"):
        bench.parse_int_list("1,two", "--batches")


def test_auto_policy_choices_are_read_from_the_verbose_log() -> None:
    log = ("[05:00:01] src/operator/nnpack/nnpack_ops.cc:250: NNPACK auto: Convolution batch 1 256x56x56 -> 256 "
           "kernel 3x3 stride 1x1 pad 1x1 -> NNPACK wt8x8 (precomputed kernel) (MXNet 39.8 ms, NNPACK auto 14.9 ms, "
           "NNPACK wt8x8 (precomputed kernel) 10.7 ms, NNPACK implicit-gemm (precomputed kernel) inf ms)\n"
           "unrelated line\n")
    (choice,) = bench.parse_auto_choices(log)
    assert choice["layer_shape"] == "Convolution batch 1 256x56x56 -> 256 kernel 3x3 stride 1x1 pad 1x1"
    assert choice["chosen"] == "NNPACK wt8x8 (precomputed kernel)"
    assert choice["ms"] == {"MXNet": 39.8, "NNPACK auto": 14.9, "NNPACK wt8x8 (precomputed kernel)": 10.7,
                            "NNPACK implicit-gemm (precomputed kernel)": float("inf")}
    text = render(bench_report.choices_table({"auto_choices": [choice]}))
    assert "256x56x56" in text and "wt8x8 (precomputed kernel) 10.70" in text


def test_auto_choices_in_the_revised_log_format() -> None:
    """Patch 0007 as revised for issue 12: 'precompute' names and the median of three samples."""
    log = ("[05:00:01] src/operator/nnpack/nnpack_ops.cc:529: NNPACK auto: Convolution 1,256,56,56,256,3,3,1,1,1,1 "
           "(graph node, batch 1 inference) -> NNPACK wt8x8 precompute (median of 3: MXNet 39.8 ms, NNPACK auto "
           "14.9 ms, NNPACK wt8x8 precompute 10.7 ms, NNPACK ft16x16 precompute inf ms)\n")
    (choice,) = bench.parse_auto_choices(log)
    assert choice["layer_shape"] == "Convolution 1,256,56,56,256,3,3,1,1,1,1 (graph node, batch 1 inference)"
    assert choice["chosen"] == "NNPACK wt8x8 precompute"
    assert choice["ms"] == {"MXNet": 39.8, "NNPACK auto": 14.9, "NNPACK wt8x8 precompute": 10.7,
                            "NNPACK ft16x16 precompute": float("inf")}


def test_qemu_correctness_checks_fail_on_a_difference_or_no_nnpack() -> None:
    good = {"network": "alexnet", "batch": 1, "rel_err": {"never": 0.0, "always": 4.7e-6},
            "nnpack_calls": {"convolution": 5}}
    assert bench.check_failures([good]) == []
    bad = {**good, "rel_err": {"never": 0.0, "always": 0.2}}
    assert bench.check_failures([bad]) == ["alexnet batch 1: max rel. difference 2.0e-01"]
    idle = {**good, "nnpack_calls": {"convolution": 0}}
    assert bench.check_failures([idle]) == ["no convolution ran on NNPACK"]


def test_spread_table_shows_every_column_measured_and_rss_only_when_there(tmp_path: Path) -> None:
    row = record("vgg16", 1, 2.0, 4.0, 6.0)
    row["images_per_second_range"] = {"never": [1.5, 2.5], "always": [3.0, 4.5], "auto": [5.0, 7.0],
                                      "pypi": [8.25, 9.75]}
    results = {"target": "x86_64", "host_cpu": "Test CPU", "threads": 2, "iterations": 5, "networks": [row]}
    text = render(bench_report.spread_table(results))
    assert "spread of 5 passes" in text and "8.25-9.75" in text and "PyPI mxnet" in text
    assert "ONNX Runtime" not in text and "peak RSS" not in text
    row["peak_rss_bytes"] = 300 << 20
    assert "300" in render(bench_report.spread_table(results))
    assert bench.plot(results, tmp_path / "bench.png").stat().st_size > 0  # error bars from the ranges


def test_timing_fields_median_spread_and_samples(monkeypatch) -> None:
    """bench_models runs on the target with mxnet; its arithmetic is checked here with a stand-in."""
    import importlib
    import types

    scripts = Path(bench.__file__).parent / "target_scripts"
    monkeypatch.setitem(sys.modules, "mxnet", types.ModuleType("mxnet"))
    monkeypatch.syspath_prepend(str(scripts))
    monkeypatch.delitem(sys.modules, "bench_models", raising=False)
    bench_models = importlib.import_module("bench_models")
    samples = {"never": [0.5, 0.2, 0.4, 0.25], "auto": [0.1]}  # unsorted, an even count: median 0.325
    fields = bench_models.timing_fields(2, samples)
    assert fields["seconds"] == {"never": pytest.approx(0.325), "auto": 0.1}
    assert fields["images_per_second"] == {"never": pytest.approx(2 / 0.325), "auto": pytest.approx(20.0)}
    # the slowest pass gives the lowest rate
    assert fields["images_per_second_range"]["never"] == [pytest.approx(4.0), pytest.approx(10.0)]
    assert fields["samples"] is samples


def test_an_older_result_without_ranges_has_no_spread_table_and_still_plots(tmp_path: Path) -> None:
    rows = [record("alexnet", b, 10.0 * b, 12.0 * b, 15.0 * b) for b in (1, 2)]
    rows[1]["images_per_second_range"] = {"never": [18.0, 21.0]}  # one row with, one without
    results = {"target": "x86_64", "host_cpu": "Test CPU", "threads": 2, "iterations": 5, "networks": rows[:1]}
    assert bench_report.spread_table(results) is None
    results["networks"] = rows
    assert "18.00-21.00" in render(bench_report.spread_table(results))
    assert bench.plot(results, tmp_path / "bench.png").stat().st_size > 0


def test_a_second_bench_of_a_target_waits_for_the_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two `invoke bench` of one target in one home: the second reinstalled the wheel under the first's
    running cells and overwrote its count cache. The wheel is installed with the target's bench lock held."""
    import fcntl
    from types import SimpleNamespace

    from nnpack_toolchain.settings import Settings
    from nnpack_toolchain.targets import TARGETS

    settings = Settings(home=tmp_path)
    target = TARGETS["armv7"]
    lock = tmp_path / "bench" / "armv7" / ".lock"  # beside the installed wheel (bench/<target>/site)
    lock.parent.mkdir(parents=True)
    seen = []

    class Env:
        def install_wheel(self, wheel: Path, site: Path, log_path: Path) -> None:
            with open(lock, "w") as other:  # another process's open file
                try:
                    fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    seen.append("free")
                except BlockingIOError:
                    seen.append("held")
            raise KeyboardInterrupt  # far enough

    monkeypatch.setattr(bench, "current_wheel", lambda t, s: SimpleNamespace(wheel=str(tmp_path / "mxnet.whl")))
    monkeypatch.setattr(bench, "python_env", lambda t, s: Env())
    with pytest.raises(KeyboardInterrupt):
        bench.run_bench(target, settings, bench.BenchOptions(networks=("alexnet",), batches=(1,), count=True))
    assert seen == ["held"]
    with open(lock, "w") as after:  # and released when the run ends
        fcntl.flock(after, fcntl.LOCK_EX | fcntl.LOCK_NB)
