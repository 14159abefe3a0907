"""Issue 15: MXNet's objects do not depend on the toolchain home that built them.

The same MXNet sources are compiled for every target in two homes of different paths, the way
the MXNet step does it (a tree at <home>/build/<target>/<base>/mxnet-1.9.1, MXNet's absolute -I
directories inside it, NNPACK's headers under <home>/out, the flags configure.py renders for that
home), and the objects must be byte-identical and free of either home's path. Before the
-ffile-prefix-map flags, __FILE__ in dmlc-core's CHECK/LOG macros put 48 home paths into the
arm64 library.

Sources: the pinned MXNet release from the source cache, else an MXNet tree the user's home
prepared; the test skips naming both when neither is there.
"""

from __future__ import annotations

import shlex
import subprocess
import tarfile
from pathlib import Path

import pytest

from conftest import MXNET_BUILD_HOME, shared_source_cache
from nnpack_toolchain.compilers import ensure_compilers
from nnpack_toolchain.configure import config_values
from nnpack_toolchain.distros import DEFAULT_BUILD
from nnpack_toolchain.nnpack import NnpackResult, SuiteSummary
from nnpack_toolchain.pins import load_pins
from nnpack_toolchain.settings import Settings
from nnpack_toolchain.sources import SourceCache
from nnpack_toolchain.targets import TARGETS, Target

# MXNet's Makefile: -I$(ROOTDIR)/... with ROOTDIR = $(CURDIR), the tree's absolute path.
INCLUDE_DIRS = ("include", "3rdparty/mshadow", "3rdparty/dmlc-core/include", "3rdparty/dlpack/include",
                "3rdparty/tvm/nnvm/include", "3rdparty/tvm/include", "src")
SOURCES = ("3rdparty/dmlc-core/src/io/local_filesys.cc", "3rdparty/dmlc-core/src/io/local_filesys.h")  # CHECK/LOG: __FILE__ of .cc and headers
HOME_HEADER = """#include <stdio.h>
static inline void nntc_where(void) { printf("%s:%d\\n", __FILE__, __LINE__); }
"""
HOME_SOURCE = '#include "nntc_where.h"\nvoid nntc_call(void) { nntc_where(); }\n'


def mxnet_sources(destination: Path) -> Path:
    """The members SOURCES and INCLUDE_DIRS need, from the release tarball or an existing tree."""
    pin = load_pins()["mxnet"]
    mirror = SourceCache(shared_source_cache()).cached_mirror(pin)
    wanted = (*INCLUDE_DIRS, *SOURCES)
    if mirror is not None:
        with tarfile.open(SourceCache(shared_source_cache()).path(mirror.sha256)) as archive:
            top = archive.getnames()[0].split("/")[0]
            members = [m for m in archive.getmembers()
                       if any(m.name == f"{top}/{w}" or m.name.startswith(f"{top}/{w}/") for w in wanted)]
            archive.extractall(destination, members=members, filter="data")
        return destination / top
    trees = sorted(MXNET_BUILD_HOME.glob("build/*/*/mxnet-1.9.1"))
    if not trees:
        pytest.skip(f"needs MXNet's sources: {pin.describe_missing()} is not in {shared_source_cache()} "
                    f"and {MXNET_BUILD_HOME} has no prepared tree (invoke fetch, or invoke mxnet once)")
    return trees[0]


def copy_members(source: Path, tree: Path) -> None:
    for name in (*INCLUDE_DIRS, *SOURCES):
        subprocess.run(["cp", "-a", "--parents", name, tree], cwd=source, check=True)


def compile_one(argv: list, tree: Path) -> None:
    proc = subprocess.run(argv, cwd=tree, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]


def compile_in_home(target: Target, home: Path, source: Path, compilers_home: Settings) -> dict[str, bytes]:
    """Compile SOURCES and a home header's user in `home` with the flags configure renders for it."""
    tree = home / "build" / target.name / DEFAULT_BUILD / "mxnet-1.9.1"
    tree.mkdir(parents=True)
    copy_members(source, tree)
    prefix = home / "out" / target.name / "deploy" / "direct_deploy" / "nnpack"
    (prefix / "include").mkdir(parents=True)
    (prefix / "include" / "nntc_where.h").write_text(HOME_HEADER)
    (tree / "nntc_call.c").write_text(HOME_SOURCE)
    nnpack = NnpackResult(target=target.name, reference="nnpack/test", backend="test", prefix=str(prefix),
                          library=str(prefix / "lib" / "libnnpack.so"), include_dirs=[str(prefix / "include")],
                          library_sha256="0" * 64, library_size=1, tests=SuiteSummary(), sources=[],
                          inputs_digest="x")
    compilers = ensure_compilers(target, compilers_home)
    values = config_values(target, nnpack, home / "sysroots" / target.name, compilers, home, tree)
    cflags = shlex.split(values["ADD_CFLAGS"])
    includes = [f"-I{tree / d}" for d in INCLUDE_DIRS]
    objects = {}
    for name in (s for s in SOURCES if s.endswith(".cc")):
        out = tree / (name + ".o")
        compile_one([compilers.cxx, *compilers.flags, "-std=c++14", "-O2", "-fPIC", *includes, *cflags,
                     "-c", tree / name, "-o", out], tree)
        objects[name] = out.read_bytes()
    compile_one([compilers.cc, *compilers.flags, "-O2", "-fPIC", *cflags, "-c", tree / "nntc_call.c", "-o",
                 tree / "nntc_call.o"], tree)
    objects["nntc_call.c"] = (tree / "nntc_call.o").read_bytes()
    return objects


@pytest.mark.network
@pytest.mark.parametrize("name", list(TARGETS))
def test_objects_are_the_same_from_two_homes_and_name_neither(name: str, tmp_path: Path,
                                                              tmp_path_factory: pytest.TempPathFactory) -> None:
    target = TARGETS[name]
    source = mxnet_sources(tmp_path / "src")
    compilers_home = Settings(home=tmp_path_factory.getbasetemp() / "compilers-home")
    first_home, second_home = tmp_path / "a", tmp_path / "other builds" / "home two"
    first = compile_in_home(target, first_home, source, compilers_home)
    second = compile_in_home(target, second_home, source, compilers_home)
    for home, objects in ((first_home, first), (second_home, second)):
        for file, data in objects.items():
            names_home, names_tmp = str(home).encode() in data, str(tmp_path).encode() in data
            assert not names_home, f"{file} names its build home {home}"
            assert not names_tmp, f"{file} names a path of the test's directory"
    assert b"/nntc-home/out/" in first["nntc_call.c"], "a home header's __FILE__ is not mapped to /nntc-home"
    assert b"3rdparty/dmlc-core/src/io/local_filesys.cc" in first[SOURCES[0]], "no __FILE__ in the object"
    assert first == second, [f for f in first if first[f] != second[f]]
