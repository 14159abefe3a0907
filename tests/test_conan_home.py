"""Two shells, one Conan home: the files of the home are written under its lock, each through a
temporary file of its own (issue 11, defect 4)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from nnpack_toolchain import conan_config
from nnpack_toolchain.settings import Settings
from nnpack_toolchain.targets import TARGETS

HOLD_LOCK = """
import sys
from pathlib import Path
from nnpack_toolchain import conan_config
from nnpack_toolchain.settings import Settings
with conan_config.conan_lock(Settings(home=Path(sys.argv[1]))):
    print("locked", flush=True)
    sys.stdin.readline()  # hold the lock until the test says so
"""

PREPARE = """
import sys
from pathlib import Path
from nnpack_toolchain import conan_config
from nnpack_toolchain.settings import Settings
from nnpack_toolchain.targets import TARGETS
conan_config.prepare_home(Settings(home=Path(sys.argv[1]), jobs=int(sys.argv[2])), TARGETS[sys.argv[3]])
print("prepared", flush=True)
"""


def python(script: str, *args: str, **kwargs) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", script, *args], text=True, **kwargs)


def test_prepare_home_waits_while_another_build_holds_the_conan_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    global_conf = home / "conan" / "global.conf"
    holder = python(HOLD_LOCK, str(home), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == "locked"
        second = python(PREPARE, str(home), "7", "armv7", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # Handshake instead of a sleep: the second process says it waits (or, unlocked, finishes).
        first_line = second.stderr.readline()
        assert "waiting for another build using the Conan home" in first_line, (
            first_line + second.stderr.read() + second.stdout.read())
        assert not global_conf.exists(), "global.conf was written while another build held the Conan home"
        holder.stdin.write("release\n")
        holder.stdin.flush()
        assert holder.wait(timeout=60) == 0
        assert second.stdout.readline().strip() == "prepared"
        assert second.wait(timeout=60) == 0
    finally:
        for proc in (holder,):
            if proc.poll() is None:
                proc.kill()
    assert "tools.build:jobs=7" in global_conf.read_text().splitlines()


def test_a_nested_lock_in_one_process_does_not_deadlock(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", jobs=3)
    with conan_config.conan_lock(settings):
        conan_config.prepare_home(settings, TARGETS["arm64"])  # takes the lock again
    assert (settings.conan_home / "profiles" / "nntc-arm64").is_file()


WRITER = """
import sys
from pathlib import Path
from nnpack_toolchain.conan_config import write_if_changed
path = Path(sys.argv[1])
for i in range(400):
    write_if_changed(path, f"writer {sys.argv[2]} round {i}\\n" * 50)
print("done", flush=True)
"""


def test_two_writers_of_one_file_never_share_a_temporary_file(tmp_path: Path) -> None:
    """Two shells rewriting the same file (e.g. global.conf with other --jobs): each write is whole,
    none fails because the other renamed its temporary file away."""
    path = tmp_path / "conan" / "global.conf"
    writers = [python(WRITER, str(path), name, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for name in "ab"]
    outputs = [w.communicate(timeout=300) for w in writers]
    for writer, (out, err) in zip(writers, outputs):
        assert writer.returncode == 0 and out.strip() == "done", err
    lines = set(path.read_text().splitlines())
    assert len(lines) == 1 and lines.pop().startswith("writer "), "the file holds a mixture of two writes"
    assert not list(path.parent.glob("*.tmp")), "a temporary file was left behind"


HOLD_TREE = """
import sys
from pathlib import Path
from nnpack_toolchain.locks import exclusive
with exclusive(Path(sys.argv[1]) / "build" / ".x86_64.lock", "unused"):
    print("locked", flush=True)
    sys.stdin.readline()
"""

BUILD_MXNET = """
import sys
from pathlib import Path
from nnpack_toolchain import mxnet
from nnpack_toolchain.configure import ConfigureResult
from nnpack_toolchain.settings import Settings
from nnpack_toolchain.targets import TARGETS

def entered(*args):
    print("entered the MXNet tree", flush=True)
    raise SystemExit(0)

mxnet.require_tools = lambda targets: None
mxnet.prepare_tree = entered
config = ConfigureResult(target="x86_64", config_mk=Path(sys.argv[1]) / "config.mk", values={},
                         sysroot=Path(sys.argv[1]), changed=False)
mxnet.build_mxnet(TARGETS["x86_64"], Settings(home=Path(sys.argv[1])), config)
"""


def test_a_second_build_of_the_same_target_waits_for_the_mxnet_tree(tmp_path: Path) -> None:
    """Two shells building MXNet for one target would run two makes in one tree (or re-prepare it
    under the other): the second waits."""
    home = tmp_path / "home"
    holder = python(HOLD_TREE, str(home), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == "locked"
        builder = python(BUILD_MXNET, str(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        line = builder.stderr.readline()
        assert "waiting for another build of MXNet for x86_64" in line, line + builder.stderr.read()
        holder.stdin.write("release\n")
        holder.stdin.flush()
        assert builder.stdout.readline().strip() == "entered the MXNet tree"
        assert builder.wait(timeout=60) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
