"""benchmarks/icecream_estimate.py: per-object times from a ccache log, and the N-machine schedule."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "icecream_estimate.py"
spec = importlib.util.spec_from_file_location("icecream_estimate", SCRIPT)
estimate = importlib.util.module_from_spec(spec)
sys.modules["icecream_estimate"] = estimate  # dataclasses look their module up there
spec.loader.exec_module(estimate)

# Two concurrent misses (pid 11 reused later for a hit) interleaved, as make -j2 writes them.
LOG = """\
[2026-12-04T10:00:00.000000 11] === CCACHE 4.7.5 STARTED =========================================
[2026-12-04T10:00:00.500000 12] === CCACHE 4.7.5 STARTED =========================================
[2026-12-04T10:00:00.600000 11] Object file: build/src/a.o
[2026-12-04T10:00:00.700000 12] Object file: build/src/b.o
[2026-12-04T10:00:30.000000 12] Result: cache_miss
[2026-12-04T10:00:40.000000 11] Result: cache_miss
[2026-12-04T10:00:41.000000 11] === CCACHE 4.7.5 STARTED =========================================
[2026-12-04T10:00:41.100000 11] Object file: build/src/c.o
[2026-12-04T10:00:41.200000 11] Result: cache_hit
[2026-12-04T10:00:42.000000 9 ] === CCACHE 4.7.5 STARTED =========================================
[2026-12-04T10:00:42.100000 9 ] Object file: CMakeFiles/nnpack.dir/src/init.c.o
[2026-12-04T10:00:45.000000 9 ] Result: cache_miss
"""


def test_ccache_log_gives_each_miss_its_own_duration() -> None:
    compiles = estimate.parse_ccache_log(LOG)
    assert [(c.object_file, round(c.seconds, 3)) for c in compiles] == [("build/src/a.o", 40.0),
                                                                         ("build/src/b.o", 29.5),
                                                                         ("CMakeFiles/nnpack.dir/src/init.c.o", 3.0)]
    assert [c.object_file for c in estimate.parse_ccache_log(LOG, r"^build/")] == ["build/src/a.o", "build/src/b.o"]


@pytest.mark.parametrize(("machines", "cores", "overhead", "expected"), [
    (1, 1, 0.6, 30.0),  # one slot: the sum, no overhead on the local machine
    (1, 2, 0.6, 16.0),  # longest first: 10 | 8, 5 -> 13 | 4 -> 14 | 3 -> 16 (optimal would be 15)
    (2, 1, 1.0, 17.0),  # slot 1 is remote: 10 | 8+1=9, 5 -> 15 | 4 -> 14 | 3 -> 17
    (8, 2, 0.6, 10.0),  # more slots than objects: the longest object, on a local slot
])
def test_longest_first_schedule_with_remote_overhead(machines: int, cores: int, overhead: float,
                                                     expected: float) -> None:
    assert estimate.schedule([5, 10, 3, 8, 4], machines, cores, overhead) == pytest.approx(expected)


def test_the_script_refuses_a_log_without_compiles(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "hits.log"
    log.write_text("\n".join(LOG.splitlines()[6:9]) + "\n")
    assert estimate.main(["--log", str(log), "--step-seconds", "60"]) == 2
    assert "has no compiles" in capsys.readouterr().err
