"""ci/bootstrap.sh: one console line per step, the tools' whole output in the log, and on a failure
the log's path and its last lines, with the failing step's exit code.

Fake `python3` and `apt-get` on PATH print hundreds of lines, as pip and apt do; the script
under test is a copy of the real one in a scratch checkout (so ci/constraints.txt can be present
or not).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

FAKE_PYTHON3 = r"""#!/bin/bash
# Records its arguments; pip and apt print as much as the real ones do.
echo "$*" >>"$FAKE_CALLS"
case "$*" in
  "-m pip install"*)
    for i in $(seq 1 300); do echo "Collecting fake-package-$i"; done
    exit "${FAKE_PIP_EXIT:-0}";;
  "-m invoke setup")
    apt-get update -q || exit $?
    exec apt-get install -y -q --no-install-recommends qemu-user gcc-aarch64-linux-gnu;;
  "-m invoke fetch")
    echo "fetch: nnpack ok"; echo "fetch: mxnet: every mirror failed"; exit "${FAKE_FETCH_EXIT:-0}";;
  "-m invoke doctor")
    echo "doctor: every host tool found"; exit "${FAKE_DOCTOR_EXIT:-0}";;
esac
echo "fake python3: unexpected arguments $*" >&2
exit 99
"""

FAKE_APT_GET = r"""#!/bin/bash
echo "apt-get $*" >>"$FAKE_CALLS"
if [ "$1" = update ]; then
  for i in $(seq 1 40); do echo "Get:$i bookworm/main amd64 Packages [$i kB]"; done
  exit 0
fi
for i in $(seq 1 200); do echo "Setting up fake-lib-$i (1.0-$i) ..."; done
if [ -n "${FAKE_APT_FAIL:-}" ]; then
  echo "E: Unable to locate package gcc-aarch64-linux-gnu"
  exit 100
fi
"""


def checkout(tmp_path: Path, *, constraints: bool) -> Path:
    repo = tmp_path / "checkout"
    (repo / "ci").mkdir(parents=True)
    shutil.copy(REPO / "ci" / "bootstrap.sh", repo / "ci" / "bootstrap.sh")
    if constraints:
        (repo / "ci" / "constraints.txt").write_text("conan==2.0.0\n")
    return repo


def bootstrap(tmp_path: Path, *, constraints: bool = False, **env: str) -> tuple[subprocess.CompletedProcess[str],
                                                                                  list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in (("python3", FAKE_PYTHON3), ("apt-get", FAKE_APT_GET)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    calls = tmp_path / "calls.txt"
    calls.write_text("")
    base = {k: v for k, v in os.environ.items() if k not in ("NNPACK_TOOLCHAIN_HOME", "XDG_CACHE_HOME")}
    full_env = {**base, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_CALLS": str(calls),
                "HOME": str(tmp_path / "user"), **env}
    repo = checkout(tmp_path, constraints=constraints)
    proc = subprocess.run(["bash", str(repo / "ci" / "bootstrap.sh")], env=full_env, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=120, check=False)
    return proc, calls.read_text().splitlines()


def test_success_prints_one_line_per_step_and_logs_everything(tmp_path: Path) -> None:
    home = tmp_path / "home"
    proc, calls = bootstrap(tmp_path, NNPACK_TOOLCHAIN_HOME=str(home))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    log = home / "logs" / "bootstrap.log"
    assert [line.split(":")[0] for line in lines[:4]] == [
        "ok   pip install -e .[test]", "ok   invoke setup", "ok   invoke fetch", "ok   invoke doctor"]
    assert all(line.endswith(" s)") for line in lines[:4])
    assert lines[4].startswith("bootstrap done in ") and lines[4].endswith(f"full output: {log}")
    assert len(lines) == 5 and proc.stderr == ""
    text = log.read_text()
    for printed in ("Collecting fake-package-300", "Get:40 bookworm", "Setting up fake-lib-200",
                    "fetch: mxnet: every mirror failed", "doctor: every host tool found"):
        assert printed in text and printed not in proc.stdout
    assert calls[0] == "-m pip install --progress-bar off -e .[test]"  # no constraints file: none passed
    assert calls[1:] == ["-m invoke setup", "apt-get update -q",
                         "apt-get install -y -q --no-install-recommends qemu-user gcc-aarch64-linux-gnu",
                         "-m invoke fetch", "-m invoke doctor"]


def test_pip_uses_the_constraints_file_when_present(tmp_path: Path) -> None:
    proc, calls = bootstrap(tmp_path, constraints=True, NNPACK_TOOLCHAIN_HOME=str(tmp_path / "home"))
    assert proc.returncode == 0, proc.stderr
    assert calls[0] == "-m pip install --progress-bar off -c ci/constraints.txt -e .[test]"
    assert re.fullmatch(r"ok   pip install -c ci/constraints.txt -e \.\[test\] \(\d+ s\)", proc.stdout.splitlines()[0])


def test_failing_apt_prints_the_log_path_and_its_tail(tmp_path: Path) -> None:
    home = tmp_path / "home"
    proc, calls = bootstrap(tmp_path, NNPACK_TOOLCHAIN_HOME=str(home), FAKE_APT_FAIL="1")
    assert proc.returncode == 100  # apt-get's own exit code
    log = home / "logs" / "bootstrap.log"
    assert proc.stdout.splitlines() == [proc.stdout.splitlines()[0]]  # only pip's ok line
    err = proc.stderr.splitlines()
    assert err[0].startswith("!!   invoke setup failed after ") and err[0].endswith(f"(exit code 100); full log: {log}")
    assert "     | E: Unable to locate package gcc-aarch64-linux-gnu" in err
    assert "     | Setting up fake-lib-200 (1.0-200) ..." in err
    assert "Setting up fake-lib-100 (1.0-100) ..." not in proc.stderr  # the tail, not the whole log
    assert len(err) < 40
    assert "-m invoke fetch" not in calls and "-m invoke doctor" not in calls  # stopped at the failure


def test_failing_pip_stops_before_apt(tmp_path: Path) -> None:
    proc, calls = bootstrap(tmp_path, NNPACK_TOOLCHAIN_HOME=str(tmp_path / "home"), FAKE_PIP_EXIT="1")
    assert proc.returncode == 1
    assert proc.stderr.startswith("!!   pip install -e .[test] failed after ")
    assert "     | Collecting fake-package-300" in proc.stderr
    assert calls == ["-m pip install --progress-bar off -e .[test]"]


def test_fetch_is_best_effort(tmp_path: Path) -> None:
    proc, calls = bootstrap(tmp_path, NNPACK_TOOLCHAIN_HOME=str(tmp_path / "home"), FAKE_FETCH_EXIT="4")
    assert proc.returncode == 0, proc.stderr
    note = [line for line in proc.stdout.splitlines() if line.startswith("note ")]
    assert len(note) == 1 and "invoke fetch" in note[0] and "exit code 4" in note[0]
    assert calls[-1] == "-m invoke doctor"


def test_failing_doctor_fails_the_bootstrap(tmp_path: Path) -> None:
    proc, _ = bootstrap(tmp_path, NNPACK_TOOLCHAIN_HOME=str(tmp_path / "home"), FAKE_DOCTOR_EXIT="3")
    assert proc.returncode == 3
    assert "invoke doctor" in proc.stderr and "     | doctor: every host tool found" in proc.stderr


def test_log_goes_under_the_default_home(tmp_path: Path) -> None:
    proc, _ = bootstrap(tmp_path, XDG_CACHE_HOME=str(tmp_path / "xdg"))
    assert proc.returncode == 0, proc.stderr
    log = tmp_path / "xdg" / "nnpack-toolchain" / "logs" / "bootstrap.log"
    assert "Collecting fake-package-1\n" in log.read_text()
    second = tmp_path / "no-xdg"
    second.mkdir()
    proc, _ = bootstrap(second)  # neither variable set: $HOME/.cache
    assert proc.returncode == 0, proc.stderr
    assert (second / "user" / ".cache" / "nnpack-toolchain" / "logs" / "bootstrap.log").is_file()


@pytest.mark.parametrize("where", ["a-file/home", "a-file"])
def test_unwritable_home_is_one_clear_line(tmp_path: Path, where: str) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    proc, calls = bootstrap(tmp_path, NNPACK_TOOLCHAIN_HOME=str(tmp_path / where))
    assert proc.returncode == 1 and calls == []
    assert proc.stderr == (f"bootstrap: cannot write its log {tmp_path / where}/logs/bootstrap.log; "
                           "set NNPACK_TOOLCHAIN_HOME to a writable directory\n")
