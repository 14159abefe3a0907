"""Progress of make and ctest runs, read from their output as it streams into the log.

Fake make / conan scripts print what the real tools print (compiler commands among other
lines; ctest's "N/M Test #K:" lines); the clock is a fake that advances 10 s per reading, so
every expected line below is worked out by hand.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from nnpack_toolchain import mxnet
from nnpack_toolchain.errors import BuildError
from nnpack_toolchain.progress import CtestTests, MakeObjects, duration_text
from nnpack_toolchain.runner import run

FAKE_MAKE = f"""#!{sys.executable}
# A make that "compiles" OBJECTS objects into DIR/build/ (creating them), as MXNet's make echoes them.
import os, sys
args = sys.argv[1:]
directory = args[args.index("-C") + 1]
dry, always = "-n" in args, "-B" in args
if dry and os.environ.get("FAKE_DRY_FAIL"):
    print("Makefile:1: *** dry run broken", file=sys.stderr)
    sys.exit(2)
count = int(os.environ.get("OBJECTS", "40"))
fail_at = int(os.environ.get("FAIL_AT", "0"))
os.makedirs(os.path.join(directory, "build"), exist_ok=True)
print("Makefile:256: \\"USE_LAPACK disabled because libraries were not found\\"")
compiled = 0
for i in range(count):
    obj = os.path.join(directory, "build", f"obj{{i:02d}}.o")
    if os.path.exists(obj) and not always:
        continue
    print(f"mkdir -p build/src/dir{{i}}")
    if i == 3:
        print("make[1]: Entering directory 'dmlc-core'")
        print(f"ccache g++ -c -O3 -Iinclude -o obj{{i:02d}}.o src/obj{{i:02d}}.cc")
    else:
        print(f"ccache g++ -std=c++11 -c -O3 -MMD -c src/obj{{i:02d}}.cc -o build/src/obj{{i:02d}}.o")
    if i == 5:  # what a compiler prints: not a compile command, though it mentions -c and -o
        print("src/obj05.cc:12:3: warning: unused variable 'o' [-Wunused-variable]")
        print("g++ -std=c++11 -MM -MT build/src/obj05.o src/obj05.cc >build/src/obj05.d")
    sys.stdout.flush()
    if dry:
        continue
    compiled += 1
    if fail_at and compiled == fail_at:
        print("make: *** [Makefile:636: build/src/objXX.o] Error 1")
        sys.exit(2)
    open(obj, "w").close()
print("ccache g++ -O3 -shared -o lib/libmxnet.so build/src/obj00.o build/src/obj01.o -lnnpack")
if not dry:
    os.makedirs(os.path.join(directory, "lib"), exist_ok=True)
    open(os.path.join(directory, "lib", "libmxnet.so"), "w").close()
"""

FAKE_CONAN = f"""#!{sys.executable}
# What `conan create` of NNPACK prints around its ctest run (tests finish out of order with -j).
order = [3, 1, 2, 5, 4, 6, 8, 7, 9, 10, 12, 11, 13, 14, 16, 15]
print("nnpack/0.0.0-20200930: Calling build()")
print("[ 98%] Building C object CMakeFiles/convolution-output-smoketest.dir/test/convolution-output/smoke.cc.o")
print("nnpack/0.0.0-20200930: Running CTest")
print("Test project /home/u/.conan2/p/b/nnpack1234/b/build/Release")
for n, test in enumerate(order, 1):
    print(f"      Start {{test:2d}}: test-{{test}}")
    number = "#" + str(test)
    print(f"{{n:2d}}/16 Test {{number:>3}}: test-{{test}} ..........   Passed    0.{{test:02d}} sec")
print("")
print("100% tests passed, 0 tests failed out of 16")
print("nnpack/0.0.0-20200930 (test package): Running test()")
print(" 1/1 nntc-smoke        OK              0.01s")
"""


def fake_tool(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(0o755)
    return path


def clock() -> itertools.count[int]:
    """Readings 0, 10, 20, ...: one per begin() and one per estimate."""
    return itertools.count(0, 10)


def plain_console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=False, width=300, soft_wrap=True), buffer


def terminal_console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=True, width=120, color_system=None, soft_wrap=True), buffer


def make(tmp_path: Path, follower: MakeObjects, log: Path, **env: str) -> None:
    fake = fake_tool(tmp_path, "make", FAKE_MAKE)
    tree = tmp_path / "tree"
    tree.mkdir(exist_ok=True)
    run([fake, "-C", tree, "-j2", "lib/libmxnet.so", "CXX=ccache g++"], log_path=log, env=env,
        what="make", progress=follower)


def test_duration_text() -> None:
    assert [duration_text(s) for s in (0, 44.6, 89, 91, 150, 3599, 3600, 3930)] == [
        "0 s", "45 s", "89 s", "2 min", "2 min", "1 h 00 min", "1 h 00 min", "1 h 06 min"]


def test_make_plain_lines_every_5_percent_and_full_log(tmp_path: Path) -> None:
    console, out = plain_console()
    log = tmp_path / "mxnet.log"
    ticks = clock()
    make(tmp_path, MakeObjects("mxnet [arm64]", console=console, clock=lambda: next(ticks)), log)
    lines = out.getvalue().splitlines()
    # 40 objects: each is 2.5 %, so a line every second object, plus the opening line.
    assert lines[0] == "  mxnet [arm64]: objects 0/40 (0%), 40 to go"
    assert [re.search(r"objects (\d+)/40 \((\d+)%\)", line).groups() for line in lines[1:]] == [
        (str(k), str(k * 100 // 40)) for k in range(2, 41, 2)]
    # Clock: begin reads 0; the estimate at object k reads 10*k (k-th reading): 10 s per object.
    # Object 2: 20 s for 2, 38 left -> 380 s -> 6 min. Object 32: 320 s / 32 * 8 = 80 s. Object 40: none left.
    assert "  mxnet [arm64]: objects 2/40 (5%), about 6 min left" in lines
    assert "  mxnet [arm64]: objects 32/40 (80%), about 80 s left" in lines
    assert lines[-1] == "  mxnet [arm64]: objects 40/40 (100%), finishing"
    text = log.read_text()
    # The log holds the tool's whole output, in order: every compile command, warning and the link.
    positions = [text.index(f"src/obj{i:02d}.cc") for i in range(40)]
    assert positions == sorted(positions)
    assert "warning: unused variable 'o'" in text and "-shared -o lib/libmxnet.so" in text
    assert text.rstrip().endswith("# exit code 0")
    assert "progress display" not in text


def test_make_resumed_build_counts_built_objects_as_done(tmp_path: Path) -> None:
    log = tmp_path / "mxnet.log"
    console, out = plain_console()
    with pytest.raises(BuildError, match="make failed"):
        make(tmp_path, MakeObjects("mxnet [arm64]", console=console, clock=lambda: 0), log, FAIL_AT="15")
    assert len(list((tmp_path / "tree" / "build").glob("*.o"))) == 14  # the 15th failed
    console, out = plain_console()
    ticks = clock()
    make(tmp_path, MakeObjects("mxnet [arm64]", console=console, clock=lambda: next(ticks)), log)
    lines = out.getvalue().splitlines()
    # 14 of 40 built (35 %): steps of 5 % at objects 16 (40 %), 18 (45 %), 20, ..., 40.
    assert lines[0] == "  mxnet [arm64]: objects 14/40 (35%), 26 to go, 14 done before"
    assert [int(re.search(r"objects (\d+)/40", line).group(1)) for line in lines[1:]] == list(range(16, 41, 2))
    # The rate counts only this run's objects: at 16, 2 compiled in 20 s, 24 left -> 240 s -> 4 min.
    assert lines[1] == "  mxnet [arm64]: objects 16/40 (40%), about 4 min left"


def test_make_terminal_bar(tmp_path: Path) -> None:
    console, out = terminal_console()
    ticks = clock()
    make(tmp_path, MakeObjects("mxnet [arm64]", console=console, clock=lambda: next(ticks)), tmp_path / "log")
    screen = out.getvalue()
    for k in range(1, 41):  # the bar is redrawn for every object, not every 5 %
        assert f"{k}/40" in screen
    assert "━" in screen and "about 6 min left" in screen  # object 2 again: 20 s for 2, 38 left
    assert "objects 2/40 (5%)" not in screen  # no plain lines on a terminal
    assert "\x1b[" in screen  # cursor movement: a live display, cleared at the end (transient)


def weights_heavy_last() -> dict[str, float]:
    """The fake make's objects: the first 20 cost 1, the last 20 cost 19 (obj03 as dmlc-core names it)."""
    weights = {f"build/src/obj{i:02d}.o": 1.0 if i < 20 else 19.0 for i in range(40)}
    weights["obj03.o"] = weights.pop("build/src/obj03.o")
    return weights


def test_make_time_left_weighs_the_objects_to_come(tmp_path: Path) -> None:
    console, out = plain_console()
    ticks = clock()
    make(tmp_path, MakeObjects("mxnet [arm64]", console=console, clock=lambda: next(ticks),
                               weights=weights_heavy_last()), tmp_path / "log")
    lines = out.getvalue().splitlines()
    # Object 2: 20 s for 2 units of work; 18 + 20 x 19 = 398 left -> 3980 s (counting objects: 6 min).
    assert "  mxnet [arm64]: objects 2/40 (5%), about 1 h 06 min left" in lines
    # Object 20 (all quick ones done): 200 s for 20 units, 380 left -> 3800 s.
    assert "  mxnet [arm64]: objects 20/40 (50%), about 1 h 03 min left" in lines
    # Object 30: 300 s for 20 + 10 x 19 = 210 units, 190 left -> 271 s -> 5 min.
    assert "  mxnet [arm64]: objects 30/40 (75%), about 5 min left" in lines
    assert lines[-1] == "  mxnet [arm64]: objects 40/40 (100%), finishing"


def test_make_weighted_resume_and_objects_not_weighed(tmp_path: Path) -> None:
    log = tmp_path / "mxnet.log"
    console, _ = plain_console()
    with pytest.raises(BuildError, match="make failed"):
        make(tmp_path, MakeObjects("mxnet [arm64]", console=console, clock=lambda: 0), log, FAIL_AT="15")
    weights = weights_heavy_last()
    del weights["build/src/obj16.o"], weights["build/src/obj17.o"]  # not weighed: the median of 18 x 1, 20 x 19
    console, out = plain_console()
    ticks = clock()
    make(tmp_path, MakeObjects("mxnet [arm64]", console=console, clock=lambda: next(ticks), weights=weights), log)
    lines = out.getvalue().splitlines()
    assert lines[0] == "  mxnet [arm64]: objects 14/40 (35%), 26 to go, 14 done before"
    # The 14 built before cost 14 and do not count for the rate. At object 16: 20 s for 2 units;
    # left: obj16 and obj17 at the median 19, 2 x 1, 20 x 19 = 420 units -> 4200 s.
    assert lines[1] == "  mxnet [arm64]: objects 16/40 (40%), about 1 h 10 min left"


def test_the_mxnet_step_weighs_objects_by_a_measured_table() -> None:
    weights = mxnet.object_weights()
    # The table comes from a finished build tree (benchmarks/mxnet_object_weights.py): MXNet's
    # objects as make names them, nnvm's and dmlc-core's relative to their sub-make.
    assert len(weights) > 300 and all(value > 0 for value in weights.values())
    assert "build/src/c_api/c_api.o" in weights and "recordio.o" in weights
    heaviest = max(weights, key=weights.__getitem__)
    assert heaviest.startswith("build/src/operator/") and weights[heaviest] > 10 * statistics.median(weights.values())


def test_object_weights_script_names_objects_as_their_make_does(tmp_path: Path) -> None:
    tree = tmp_path / "mxnet-1.9.1"
    for name, size in [("build/src/c_api/c_api_error.o", 3000), ("build/src/operator/big.o", 9000),
                       ("3rdparty/tvm/nnvm/build/src/c_api/c_api_error.o", 5000),
                       ("3rdparty/dmlc-core/recordio.o", 1500)]:
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_bytes(b"x" * size)
    script = Path(__file__).parents[1] / "benchmarks" / "mxnet_object_weights.py"
    done = subprocess.run([sys.executable, script, tree], capture_output=True, text=True, check=True)
    # KiB, rounded; a name shared by MXNet and nnvm keeps the larger.
    assert json.loads(done.stdout) == {"build/src/c_api/c_api_error.o": 5, "build/src/operator/big.o": 9,
                                       "recordio.o": 1}
    (tmp_path / "empty").mkdir()
    empty = subprocess.run([sys.executable, script, tmp_path / "empty"], capture_output=True, text=True)
    assert empty.returncode == 1 and "no object files" in empty.stderr and not empty.stdout


def test_make_dry_run_failure_still_builds_and_counts(tmp_path: Path) -> None:
    console, out = plain_console()
    make(tmp_path, MakeObjects("mxnet [arm64]", console=console, clock=lambda: 0), tmp_path / "log",
         FAKE_DRY_FAIL="1")
    assert out.getvalue().splitlines() == ["  mxnet [arm64]: objects 25 (total unknown)"]
    assert len(list((tmp_path / "tree" / "build").glob("*.o"))) == 40


def test_a_broken_follower_never_fails_the_build(tmp_path: Path) -> None:
    class Broken(MakeObjects):
        def line(self, text: str) -> None:
            raise RuntimeError("display bug")

    console, _ = plain_console()
    log = tmp_path / "log"
    make(tmp_path, Broken("mxnet [arm64]", console=console), log)
    assert len(list((tmp_path / "tree" / "build").glob("*.o"))) == 40
    assert "# progress display stopped: RuntimeError: display bug" in log.read_text()


def conan(tmp_path: Path, follower: CtestTests) -> Path:
    log = tmp_path / "nnpack.log"
    run([fake_tool(tmp_path, "conan", FAKE_CONAN), "create", "recipes/nnpack"], log_path=log, what="conan create",
        progress=follower)
    return log


def test_ctest_plain_lines(tmp_path: Path) -> None:
    console, out = plain_console()
    ticks = clock()
    log = conan(tmp_path, CtestTests("nnpack [armv7]", console=console, clock=lambda: next(ticks)))
    lines = out.getvalue().splitlines()
    assert lines.pop(0) == "  nnpack [armv7]: tests 0/16 (0%), 16 to go"  # at the first result: the total
    # 16 tests: each is 6.25 %, so every test crosses a 5 % step. The meson "1/1" line is no ctest result.
    assert [re.search(r"tests (\d+)/16 \((\d+)%\)", line).groups() for line in lines] == [
        (str(k), str(100 * k // 16)) for k in range(1, 17)]
    # "Test project" reads 0; test k reads 10*k: 10 s a test. Test 4: 40 s for 4, 12 left -> 120 s -> 2 min.
    assert "  nnpack [armv7]: tests 4/16 (25%), about 2 min left" in lines
    assert "  nnpack [armv7]: tests 10/16 (62%), about 60 s left" in lines
    assert lines[-1] == "  nnpack [armv7]: tests 16/16 (100%), finishing"
    assert "100% tests passed, 0 tests failed out of 16" in log.read_text()


def test_ctest_terminal_bar(tmp_path: Path) -> None:
    console, out = terminal_console()
    ticks = clock()
    conan(tmp_path, CtestTests("nnpack [armv7]", console=console, clock=lambda: next(ticks)))
    screen = out.getvalue()
    assert all(f"{k}/16" in screen for k in range(1, 17))
    assert "nnpack [armv7] tests" in screen and "━" in screen and "about 2 min left" in screen
    assert "tests 4/16 (25%)" not in screen


def test_conan_create_of_nnpack_shows_its_test_progress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """The NNPACK stage's `conan create` call is followed (here by a fake conan; in CI logs: plain lines)."""
    from nnpack_toolchain import conan_config
    from nnpack_toolchain.settings import Settings
    from nnpack_toolchain.targets import parse_target

    monkeypatch.setattr(conan_config, "conan_command", lambda: [str(fake_tool(tmp_path, "conan", FAKE_CONAN))])
    log = tmp_path / "nnpack-armv7.log"
    conan_config.create(parse_target("armv7"), Settings(home=tmp_path / "home"), "nnpack", log)
    err = capsys.readouterr().err  # log.console writes to stderr; not a terminal under pytest
    assert "  nnpack [armv7]: tests 8/16 (50%)" in err and "  nnpack [armv7]: tests 16/16 (100%), finishing" in err
    assert "Test #16: test-16" in log.read_text() and "Test #16" not in err


def test_the_mxnet_step_shows_make_progress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """build_mxnet's make call is followed: a fake make on PATH, the tree and the checks stubbed out."""
    from nnpack_toolchain import mxnet
    from nnpack_toolchain.configure import ConfigureResult
    from nnpack_toolchain.settings import Settings
    from nnpack_toolchain.targets import parse_target

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_tool(bin_dir, "make", FAKE_MAKE)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("OBJECTS", "20")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / ".nntc-prepared").write_text("stub")
    monkeypatch.setattr(mxnet, "require_tools", lambda targets: None)
    monkeypatch.setattr(mxnet, "prepare_tree", lambda *args, **kwargs: (tree, "mxnet 1.9.1 (stub)"))
    monkeypatch.setattr(mxnet, "verify_mxnet", lambda *args, **kwargs: ["libnnpack.so"])
    monkeypatch.setattr(mxnet, "current_package_inputs", lambda *args: {})
    config_mk = tmp_path / "config.mk"
    config_mk.write_text("USE_NNPACK = 1\n")
    target = parse_target("arm64")
    settings = Settings(home=tmp_path / "home", ccache=False, jobs=2)
    values = {"CXX": "g++", "ADD_CFLAGS": "-O2 '-ffile-prefix-map=/srv/a \\#1=.'"}
    mxnet.build_mxnet(target, settings, ConfigureResult(target.name, config_mk, values, tmp_path, True))
    # ADD_CFLAGS also on make's command line (the dmlc-core and nnvm sub-makes get it), '#' unescaped
    import shlex

    expected = shlex.quote("ADD_CFLAGS=-O2 '-ffile-prefix-map=/srv/a #1=.'")
    assert expected in (settings.logs_dir / "mxnet-arm64.log").read_text()
    err = capsys.readouterr().err
    # 20 objects, 5 % each: a line per object after the opening one
    assert "  mxnet [arm64]: objects 0/20 (0%), 20 to go" in err
    assert "  mxnet [arm64]: objects 10/20 (50%)" in err and "  mxnet [arm64]: objects 20/20 (100%), finishing" in err



def test_an_unreachable_icecream_scheduler_compiles_locally_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """--distribute with no scheduler listening: one line says so and make runs with the local jobs."""
    from nnpack_toolchain import mxnet
    from nnpack_toolchain.configure import ConfigureResult
    from nnpack_toolchain.settings import Settings
    from nnpack_toolchain.targets import parse_target

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_tool(bin_dir, "make", FAKE_MAKE)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("OBJECTS", "20")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / ".nntc-prepared").write_text("stub")
    monkeypatch.setattr(mxnet, "require_tools", lambda targets: None)
    monkeypatch.setattr(mxnet, "prepare_tree", lambda *args, **kwargs: (tree, "mxnet 1.9.1 (stub)"))
    monkeypatch.setattr(mxnet, "verify_mxnet", lambda *args, **kwargs: ["libnnpack.so"])
    monkeypatch.setattr(mxnet, "current_package_inputs", lambda *args: {})
    config_mk = tmp_path / "config.mk"
    config_mk.write_text("USE_NNPACK = 1\n")
    target = parse_target("arm64")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = Settings(home=tmp_path / "home", ccache=False, jobs=2, distribute=f"127.0.0.1:{port}")
    mxnet.build_mxnet(target, settings, ConfigureResult(target.name, config_mk, {"CXX": "g++", "ADD_CFLAGS": "-O2"},
                                                        tmp_path, True))
    err = capsys.readouterr().err
    assert err.count(f"icecream scheduler 127.0.0.1:{port} not reachable: compiling locally with 2 jobs") == 1, err
    assert "  mxnet [arm64]: objects 20/20 (100%), finishing" in err
