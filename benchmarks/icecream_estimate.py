#!/usr/bin/env python3
"""Expected wall time of the MXNet step on N machines, from the measured per-object compile times.

Each compile's time comes from ccache's own log of a cold local build (set CCACHE_LOGFILE for
`invoke build`, e.g. `CCACHE_LOGFILE=/tmp/ccache-x86_64.log invoke build --arch x86_64`): per
ccache process, its first and last time stamp and whether the object was a miss (compiled) or a
hit. The objects are then scheduled on N machines x C cores the way make -j + icecream's scheduler
would at best (longest first onto the slot free earliest, all of MXNet's objects being independent
until the link), each object on another machine paying the measured remote overhead (shipping the
preprocessed source and the object: icecream's loopback test set took 1.3-1.5 s remote against
0.8 s local, so about 0.6 s). The serial tail (linking libmxnet.so, the sub-makes' archives)
is the step's time after its last compile and stays on the local machine.

    python3 benchmarks/icecream_estimate.py --log /tmp/ccache-x86_64.log --step-seconds 3000 \\
        --cores 2 --machines 1,2,4,8 --json benchmarks/results/icecream-estimate-x86_64.json
"""

from __future__ import annotations

import argparse
import heapq
import json
import re
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

LINE = re.compile(r"^\[(\S+) +(\d+) *\] (.*)$")  # ccache pads short pids: "[... 5411 ]"


@dataclass
class Compile:
    object_file: str
    seconds: float
    start: float
    end: float


def parse_ccache_log(text: str, objects: str = "") -> list[Compile]:
    """The compiles (cache misses) in a ccache log, one per ccache run that names an object file.
    Lines of concurrent runs interleave; a run starts at its "=== CCACHE ... STARTED" line (pids repeat)."""
    runs: list[dict] = []
    active: dict[str, dict] = {}
    for line in text.splitlines():
        match = LINE.match(line)
        if not match:
            continue
        stamp, pid, message = datetime.fromisoformat(match.group(1)).timestamp(), match.group(2), match.group(3)
        if message.startswith("=== CCACHE"):
            active[pid] = {"start": stamp}
            runs.append(active[pid])
        run = active.get(pid)
        if run is None:
            continue
        run["end"] = stamp
        if message.startswith("Object file: "):
            run["object"] = message.removeprefix("Object file: ")
        elif message == "Result: cache_miss":
            run["miss"] = True
    return [Compile(r["object"], r["end"] - r["start"], r["start"], r["end"])
            for r in runs if r.get("miss") and "object" in r and re.search(objects, r["object"])]


def schedule(seconds: list[float], machines: int, cores: int, remote_overhead: float) -> float:
    """Longest-first list scheduling on machines x cores slots; slots of other machines pay the overhead.
    Returns the time the last compile ends."""
    slots = [(0.0, index) for index in range(machines * cores)]  # (free at, slot); slots < cores are local
    heapq.heapify(slots)
    end = 0.0
    for duration in sorted(seconds, reverse=True):
        free_at, slot = heapq.heappop(slots)
        finish = free_at + duration + (0.0 if slot < cores else remote_overhead)
        end = max(end, finish)
        heapq.heappush(slots, (finish, slot))
    return end


def estimate(compiles: list[Compile], step_seconds: float, cores: int, machines: list[int],
             remote_overhead: float) -> dict:
    span = max(c.end for c in compiles) - min(c.start for c in compiles)
    serial = max(step_seconds - span, 0.0)
    times = [c.seconds for c in compiles]
    rows = []
    for count in machines:
        compile_wall = schedule(times, count, cores, remote_overhead)
        rows.append({"machines": count, "cores_each": cores, "compile_seconds": round(compile_wall, 1),
                     "serial_seconds": round(serial, 1), "step_seconds": round(compile_wall + serial, 1)})
    return {"objects": len(times), "compile_cpu_seconds": round(sum(times), 1),
            "longest_object_seconds": round(max(times), 1),
            "longest_objects": [(c.object_file, round(c.seconds, 1))
                                for c in sorted(compiles, key=lambda c: -c.seconds)[:5]],
            "measured_step_seconds": step_seconds, "measured_compile_span_seconds": round(span, 1),
            "remote_overhead_seconds": remote_overhead, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", type=Path, required=True, help="ccache log (CCACHE_LOGFILE) of a cold build")
    parser.add_argument("--step-seconds", type=float, required=True, help="the MXNet step's measured time")
    parser.add_argument("--cores", type=int, default=2, help="cores per machine (make -j slots)")
    parser.add_argument("--machines", default="1,2,4,8", help="comma list of machine counts")
    parser.add_argument("--remote-overhead", type=float, default=0.6, help="seconds added per remote object")
    parser.add_argument("--match", default=r"^build/",
                        help="regex of the objects to count (default: MXNet's own, build/...; the log "
                             "also holds NNPACK's CMake objects when NNPACK was built in the same run)")
    parser.add_argument("--json", type=Path, help="write the estimate here")
    args = parser.parse_args(argv)
    if not args.log.is_file():
        print(f"icecream_estimate: {args.log} does not exist; build with CCACHE_LOGFILE={args.log}", file=sys.stderr)
        return 2
    compiles = parse_ccache_log(args.log.read_text(errors="replace"), args.match)
    if not compiles:
        print(f"icecream_estimate: {args.log} has no compiles (cache misses): was the build cold?", file=sys.stderr)
        return 2
    result = estimate(compiles, args.step_seconds, args.cores, [int(n) for n in args.machines.split(",")],
                      args.remote_overhead)
    print(f"{result['objects']} objects compiled, {result['compile_cpu_seconds']} s of compiles, longest "
          f"{result['longest_object_seconds']} s; serial tail {result['rows'][0]['serial_seconds']} s")
    print("| machines x cores | compiles (s) | MXNet step (s) |\n|---|---|---|")
    for row in result["rows"]:
        print(f"| {row['machines']} x {row['cores_each']} | {row['compile_seconds']} | {row['step_seconds']} |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
