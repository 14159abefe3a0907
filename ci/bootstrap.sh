#!/usr/bin/env bash
# One command sets up a fresh Debian 12 x86-64 machine: the Python package (Conan, Meson,
# Invoke, ...; pinned by ci/constraints.txt when present) and the Debian packages (cross
# compilers, QEMU, Ninja, CMake, ...), then fills the source cache with whatever pinned sources
# are reachable (best effort, never fatal) and checks the host.
# The console gets one line per step (what, how long); the tools' whole output goes to
# <toolchain home>/logs/bootstrap.log, whose path and last lines are printed when a step fails.
set -euo pipefail
cd "$(dirname "$0")/.."

home="${NNPACK_TOOLCHAIN_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/nnpack-toolchain}"
log="$home/logs/bootstrap.log"
if ! mkdir -p "$home/logs" 2>/dev/null || ! : >"$log" 2>/dev/null; then
    echo "bootstrap: cannot write its log $log; set NNPACK_TOOLCHAIN_HOME to a writable directory" >&2
    exit 1
fi
echo "# bootstrap started $(date -u '+%Y-%m-%d %H:%M:%S UTC') in $PWD" >>"$log"
tail_lines=25

# step fatal|optional NAME DETAIL COMMAND...: run COMMAND with its output in the log, print one line.
step() {
    local mode=$1 name=$2 detail=$3 start=$SECONDS code=0
    shift 3
    printf '\n$ %s\n' "$*" >>"$log"
    "$@" </dev/null >>"$log" 2>&1 || code=$?
    local took=$((SECONDS - start))
    echo "# exit code $code" >>"$log"
    if [ "$code" -eq 0 ]; then
        echo "ok   $name${detail:+: $detail} (${took} s)"
    elif [ "$mode" = optional ]; then
        echo "note $name failed after ${took} s (exit code $code): some pinned sources could not be fetched;" \
             "tests that need them will skip and name them (details: $log)"
    else
        {
            echo "!!   $name failed after ${took} s (exit code $code); full log: $log"
            echo "     last lines of the log:"
            tail -n "$tail_lines" "$log" | sed 's/^/     | /'
        } >&2
        exit "$code"
    fi
}

started=$SECONDS
if [ -f ci/constraints.txt ]; then  # the tested versions of Conan, Meson, ...
    step fatal "pip install -c ci/constraints.txt -e .[test]" "" \
        python3 -m pip install --progress-bar off -c ci/constraints.txt -e '.[test]'
else
    step fatal "pip install -e .[test]" "versions not pinned, no ci/constraints.txt" \
        python3 -m pip install --progress-bar off -e '.[test]'
fi
step fatal "invoke setup" "Debian packages, cross compilers, QEMU" \
    python3 -m invoke setup
step optional "invoke fetch" "pinned sources, best effort" \
    python3 -m invoke fetch
step fatal "invoke doctor" "host tools" \
    python3 -m invoke doctor
echo "bootstrap done in $((SECONDS - started)) s; full output: $log"
