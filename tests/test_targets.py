import pytest

from nnpack_toolchain.errors import ConfigurationError

from nnpack_toolchain.errors import UnknownTargetError
from nnpack_toolchain.targets import TARGETS, parse_target, parse_targets


@pytest.mark.parametrize(
    "typed, expected",
    [("arm64", "arm64"), ("aarch64", "arm64"), ("ARMHF", "armv7"), ("armv7", "armv7"), ("amd64", "x86_64"),
     ("x86_64", "x86_64")],
)
def test_names_and_aliases(typed, expected):
    assert parse_target(typed).name == expected


def test_all_and_lists():
    assert [t.name for t in parse_targets("all")] == ["x86_64", "armv7", "arm64"]
    assert [t.name for t in parse_targets("aarch64, armhf")] == ["arm64", "armv7"]


@pytest.mark.parametrize("bad", ["riscv64", "", "arm65", "all,arm64"])
def test_unknown_target_lists_valid_ones(bad):
    expected = ConfigurationError if bad == "" else UnknownTargetError
    with pytest.raises(expected) as info:
        parse_targets(bad)
    for name in TARGETS:
        assert name in info.value.message
    assert info.value.exit_code == 2


def test_model_is_consistent():
    aliases = [a for t in TARGETS.values() for a in (t.name, *t.aliases)]
    assert len(aliases) == len(set(aliases)), "an alias points at two targets"
    for t in TARGETS.values():
        assert t.nnpack_backend == t.nnpack_backends[0]
        assert set(t.backend_marker_symbols) == set(t.nnpack_backends)
        assert t.is_native == (t.name == "x86_64")
        assert t.cc == f"{t.gnu_triple}-gcc"
        assert t.debian_packages[t.cxx] == (f"g++-{t.gnu_triple}" if not t.is_native else "g++")
    assert "-mfp16-format=ieee" in TARGETS["armv7"].compiler_flags
    assert TARGETS["armv7"].cmake_system_processor == "armv7l"  # NNPACK rejects armv7hf
    assert TARGETS["arm64"].emulator == ("qemu-aarch64", "-L", "/usr/aarch64-linux-gnu")
