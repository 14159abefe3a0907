"""ONNX Runtime beside MXNet (issue 14): the arithmetic of the counts and the comparison, and a real
export + compare + count of a small network on arm64 (PyPI mxnet's exporter on x86-64, PyPI's
onnxruntime aarch64 wheel in Debian 12's Python under QEMU, the project's arm64 wheel beside it)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import MXNET_BUILD_HOME, run_invoke
from nnpack_toolchain import onnx_compare
from nnpack_toolchain.errors import ConfigurationError, VerificationError
from nnpack_toolchain.model_zoo import SymbolBuilder
from nnpack_toolchain.onnx_compare import OnnxOptions, relative_errors, run_onnx_compare
from nnpack_toolchain.onnx_count import REPEAT_TOLERANCE, per_image
from nnpack_toolchain.settings import Settings
from nnpack_toolchain.targets import TARGETS


def test_per_image_cancels_startup_and_the_forks_own_instructions() -> None:
    # S = 1e9 before the first counted fork, d = 5,000 per fork, W(K) = 3e6 * K, batch 2, K1, K2 = 1, 3
    s, d, w = 1_000_000_000, 5_000, 3_000_000
    forks = [s + i * d + w * k for i, k in enumerate((1, 3, 1, 3))]
    counts = per_image([s - 40_000, *forks, s + 9 * d], (1, 3), 2)
    assert counts["per_image"] == w / 2 and counts["fork_overhead"] == d and counts["spread"] == 0


def test_per_image_refuses_increments_that_disagree_and_missing_forks() -> None:
    with pytest.raises(VerificationError, match=r"increments differ by 1\.01% \(> 0\.1%\)"):
        per_image([0, 100, 1_100_000, 200, 1_111_200, 0], (0, 1), 1)  # d = 2,825: 1,097,075 vs 1,108,175
    with pytest.raises(VerificationError, match="expected 6 instruction totals"):
        per_image([1, 2, 3], (0, 1), 1)
    with pytest.raises(VerificationError, match="counted no more instructions"):
        per_image([5, 5, 5, 5, 5, 5], (0, 1), 1)


def test_relative_errors_find_a_wrong_output() -> None:
    logits = np.linspace(-1, 1, 10, dtype=np.float32).reshape(1, 10)
    reference = {"never:logits": logits}
    assert relative_errors(reference, {"fc1": logits + 1e-7}, "never", ["logits"], ["fc1"])["logits"] < 1e-6
    wrong = relative_errors(reference, {"fc1": logits[:, ::-1]}, "never", ["logits"], ["fc1"])["logits"]
    assert wrong == pytest.approx(2.0)
    with pytest.raises(VerificationError, match="shape"):
        relative_errors(reference, {"fc1": logits.T}, "never", ["logits"], ["fc1"])


def test_options_and_targets_without_an_onnxruntime_wheel_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="unknown network"):
        OnnxOptions(networks=("lenet",))
    with pytest.raises(ConfigurationError, match="K1,K2"):
        OnnxOptions(passes=(2, 1))
    with pytest.raises(ConfigurationError, match="no onnxruntime==.* wheel for armv7"):
        onnx_compare.onnxruntime_wheel(TARGETS["armv7"], "3.11", Settings(home=tmp_path), tmp_path / "log")
    with pytest.raises(ConfigurationError, match="--mxnet-count takes NNPACK policies .* not sometimes"):
        OnnxOptions(mxnet_count=onnx_compare.parse_policies("never,sometimes"))
    assert OnnxOptions(mxnet_count=onnx_compare.parse_policies("none")).mxnet_count == ()
    with pytest.raises(ConfigurationError, match=r"\(or none alone\), not none$"):  # none is not a policy
        OnnxOptions(mxnet_count=onnx_compare.parse_policies("never,none"))
    assert onnx_compare.parse_policies(" always,never,always") == ("always", "never")


def test_mxnet_count_option_reaches_the_run_and_a_bad_one_is_one_line(tmp_path: Path) -> None:
    proc = run_invoke("onnx-compare", "--arch", "arm64", "--mxnet-count", "auto", "--home", str(tmp_path))
    assert proc.returncode == 2, proc.stderr
    assert "--mxnet-count takes NNPACK policies from never,always (or none alone), not auto" in proc.stderr
    assert "Traceback" not in proc.stderr and not list(tmp_path.iterdir())


def two_conv_net(path: Path) -> Path:
    """conv 3->8 (no bias) + BatchNorm + ReLU, max-pool 2x2/2, conv 8->16 + ReLU, global average, FC 10, softmax."""
    g = SymbolBuilder()
    x = g.variable("data")
    x = g.relu(g.batch_norm(g.conv(x, "conv1", 8, (3, 3), pad=(1, 1), no_bias=True), "bn1"), "relu1")
    x = g.pool(x, "pool1", "max", (2, 2), stride=(2, 2))
    x = g.relu(g.conv(x, "conv2", 16, (3, 3), pad=(1, 1)), "relu2")
    x = g.pool(x, "pool2", "avg", (1, 1), global_pool=True)
    x = g.fc(g.op("Flatten", "flatten", [x]), "fc1", 10)
    path.write_text(json.dumps(g.symbol(g.softmax_output(x))))
    return path


def arm64_wheel() -> Path:
    wheels = sorted((MXNET_BUILD_HOME / "out" / "arm64" / "wheel").glob("mxnet-*aarch64.whl"))
    if not wheels:
        pytest.skip(f"needs the project's arm64 MXNet wheel in {MXNET_BUILD_HOME}/out/arm64/wheel "
                    "(invoke wheel --arch arm64, or set NNTC_MXNET_BUILD_HOME)")
    return wheels[-1]


@pytest.mark.mxnet_build
@pytest.mark.network
def test_small_network_exports_agrees_and_counts_reproducibly(tmp_path_factory: pytest.TempPathFactory) -> None:
    wheel = arm64_wheel()
    settings = Settings(home=tmp_path_factory.mktemp("home"))
    try:
        onnx_compare.onnxruntime_wheel(TARGETS["arm64"], "3.11", settings, tmp_path_factory.mktemp("logs") / "log")
    except ConfigurationError as error:
        pytest.skip(f"no {onnx_compare.ONNXRUNTIME} aarch64 cp311 wheel from PyPI: {error}")
    symbol = two_conv_net(tmp_path_factory.mktemp("net") / "twoconv-symbol.json")
    options = OnnxOptions(networks=("twoconv",), size=32, passes=(0, 4), mxnet_wheel=wheel,
                          symbols={"twoconv": symbol})
    first = run_onnx_compare(TARGETS["arm64"], settings, options)
    [cell] = first["cells"]
    export = cell["export"]
    assert export["mxnet"] == "1.9.1" and export["output_roles"] == ["logits", "probabilities"]
    assert {"Conv", "BatchNormalization", "MaxPool", "Gemm", "Softmax"} <= set(export["ops"])
    assert export["inputs"] == ["data"]  # the weights are constants, not graph inputs
    assert set(cell["rel_err"]) == {"MXNet x86-64 (PyPI, exporter)", "MXNet never (target)", "NNPACK always (target)"}
    for label in ("MXNet x86-64 (PyPI, exporter)", "MXNet never (target)"):
        assert max(cell["rel_err"][label].values()) <= onnx_compare.TOLERANCE, cell["rel_err"]
    count = cell["count"]
    assert count["per_image"] > 0 and count["single_threaded"] and count["spread"] <= REPEAT_TOLERANCE
    # The passes' instructions grow with the work: a pass is more than the parent's few between forks.
    assert count["increments"][0] > 100 * abs(count["fork_overhead"])
    # MXNet counted the same way on the same weights and input: NNPACK's Winograd takes fewer instructions there.
    mxnet = cell["mxnet_count"]
    assert set(mxnet) == {"never", "always"} and all(c["single_threaded"] for c in mxnet.values())
    assert 0 < mxnet["always"]["per_image"] < mxnet["never"]["per_image"]
    options.mxnet_count = ()  # the export is cached, ONNX Runtime's count is not
    second = run_onnx_compare(TARGETS["arm64"], settings, options)
    assert "mxnet_count" not in second["cells"][0]
    again = second["cells"][0]["count"]
    assert again["totals"] != count["totals"] or again["per_image"] == count["per_image"]
    assert abs(again["per_image"] - count["per_image"]) <= 1e-3 * count["per_image"]
    assert Path(second["json"]).is_file()


def test_bench_gets_an_onnxruntime_column(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from nnpack_toolchain import bench, bench_report

    records = [{"network": "resnet18", "batch": 1, "seconds": {"never": 0.1}, "images_per_second": {"never": 10.0}}]
    asked = []

    def timing(settings, networks, batches, iterations, threads, log_path):
        asked.append((networks, batches, iterations, threads))
        return [{"network": "resnet18", "batch": 1, "seconds": {"onnxruntime": 0.04},
                 "images_per_second": {"onnxruntime": 25.0}},
                {"network": "resnet18", "batch": 2, "seconds": {"onnxruntime": 0.07},
                 "images_per_second": {"onnxruntime": 28.6}}]

    monkeypatch.setattr(onnx_compare, "timing_records", timing)
    results = {"networks": records, "target": "x86_64", "host_cpu": "cpu", "threads": 2}
    options = bench.BenchOptions(networks=("resnet18",), batches=(1,), iterations=5, threads=2, onnxruntime=True)
    bench.add_onnxruntime_column(results, Settings(home=tmp_path), options, tmp_path / "log")
    assert asked == [(("resnet18",), (1,), 5, 2)]
    assert records[0]["images_per_second"] == {"never": 10.0, "onnxruntime": 25.0}
    assert bench.POLICY_LABELS["onnxruntime"] in bench_report.network_table(results).columns[3].header


def test_fixed_gammas_are_the_batchnorms_mxnet_computes_with_gamma_1(monkeypatch) -> None:
    """MXNet 1.9.1's exporter ignores fix_gamma (MobileNet's ONNX outputs differed by 42 % before)."""
    import importlib

    from nnpack_toolchain.model_zoo import MODELS

    monkeypatch.syspath_prepend(str(onnx_compare.SCRIPTS))  # as on the target: the scripts' directory
    monkeypatch.delitem(sys.modules, "onnx_cell", raising=False)
    onnx_cell = importlib.import_module("onnx_cell")
    mobilenet, resnet18 = MODELS["mobilenet"](), MODELS["resnet18"]()
    batchnorms = [n for n in mobilenet["nodes"] if n["op"] == "BatchNorm"]
    assert len(onnx_cell.fixed_gammas(mobilenet)) == len(batchnorms) == 27
    assert all(name.endswith("_gamma") for name in onnx_cell.fixed_gammas(mobilenet))
    assert onnx_cell.fixed_gammas(resnet18) == ["bn_data_gamma"]  # the others have fix_gamma=False
    # no attribute: MXNet's default, fix_gamma=True
    bare = {"nodes": [{"op": "null", "name": "x", "inputs": []}, {"op": "null", "name": "g", "inputs": []},
                      {"op": "BatchNorm", "name": "bn", "inputs": [[0, 0, 0], [1, 0, 0]]}]}
    assert onnx_cell.fixed_gammas(bare) == ["g"]


def test_a_network_that_disagrees_fails_the_run_at_the_end_and_the_others_are_kept(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Before, the first disagreeing network (MobileNet) stopped the run and nothing was written."""
    settings = Settings(home=tmp_path / "home")
    out = np.arange(10, dtype=np.float32) + 1

    def export_model(settings, symbol, batch, size, log_path):
        directory = tmp_path / "export" / symbol.stem
        directory.mkdir(parents=True)
        np.savez(directory / "mxnet.npz", **{"default:logits": out})
        return onnx_compare.Exported(directory, {"output_roles": ["logits"], "outputs": ["fc"], "batch": batch})

    def run_script(env, script, args, extra_env, log_path, what, timeout=7200):
        saved = Path(args[args.index("--save") + 1])
        wrong = "bad" in str(args[args.index("--model") + 1])
        np.savez(saved, fc=out * (1.5 if wrong else 1.0))  # ONNX Runtime's outputs
        return [{"kind": "ort"}]

    monkeypatch.setattr(onnx_compare, "export_env", lambda settings, log_path: None)
    monkeypatch.setattr(onnx_compare, "export_model", export_model)
    monkeypatch.setattr(onnx_compare, "run_script", run_script)
    symbols = {name: tmp_path / f"{name}-symbol.json" for name in ("good", "bad", "good2")}
    options = OnnxOptions(networks=("good", "bad", "good2"), symbols=symbols, mxnet_on_target=False)
    with pytest.raises(VerificationError, match=r"differ from MXNet's beyond .* on bad batch 1 .*logits: 5\.0e-01"):
        run_onnx_compare(TARGETS["x86_64"], settings, options)
    kept = json.loads((settings.output_dir("x86_64") / "onnx" / "onnx-compare-x86_64.json").read_text())
    assert [(c["network"], bool(c["failures"])) for c in kept["cells"]] == [("good", False), ("bad", True),
                                                                           ("good2", False)]
    assert not (settings.output_dir("x86_64") / "onnx" / "onnx-compare-x86_64.partial.json").exists()
