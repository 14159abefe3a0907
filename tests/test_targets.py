import shutil
import subprocess
from pathlib import Path

import pytest

from nnpack_toolchain.errors import ConfigurationError, UnknownTargetError
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
    assert "-mfp16-format=ieee" in TARGETS["armv7"].compiler_flags
    assert TARGETS["armv7"].cmake_system_processor == "armv7l"  # NNPACK rejects armv7hf
    assert TARGETS["arm64"].emulator == ("qemu-aarch64", "-L", "/usr/aarch64-linux-gnu")


# What the README's target table and the ELF specification say, independent of targets.py:
# GNU triple, and what readelf -h prints as Class and Machine for the target's objects.
MACHINES = {
    "x86_64": ("x86_64-linux-gnu", "ELF64", "Advanced Micro Devices X86-64"),
    "armv7": ("arm-linux-gnueabihf", "ELF32", "ARM"),
    "arm64": ("aarch64-linux-gnu", "ELF64", "AArch64"),
}
C_SOURCE = '#include <stdio.h>\nfloat scale(float a, float b) { return a * b + 1.0f; }\n' \
    'int main(void) { printf("%g\\n", scale(2.0f, 3.0f)); return 0; }\n'


def readelf(*args: str) -> str:
    return subprocess.run(["readelf", *args], capture_output=True, text=True, check=True).stdout


def header_field(header: str, name: str) -> str:
    return next(line.split(":", 1)[1].strip() for line in header.splitlines() if line.strip().startswith(name + ":"))


@pytest.mark.parametrize("name", list(MACHINES))
def test_the_targets_compilers_exist_and_build_for_the_target_machine(name, tmp_path):
    """The model's compilers are on PATH, target the README's triple (-dumpmachine) and emit objects
    readelf says are for the target machine; the model's ELF fields agree with what readelf prints."""
    target = TARGETS[name]
    triple, elf_class, machine = MACHINES[name]
    assert target.gnu_triple == triple
    source = tmp_path / "scale.c"
    source.write_text(C_SOURCE)
    for compiler, lang in ((target.cc, "c"), (target.cxx, "c++")):
        assert shutil.which(compiler), f"{compiler} is not on PATH"
        dumped = subprocess.run([compiler, "-dumpmachine"], capture_output=True, text=True, check=True).stdout
        assert dumped.strip() == triple, compiler
        obj = tmp_path / f"scale-{lang}.o"
        subprocess.run([compiler, *target.compiler_flags, "-x", lang, "-c", str(source), "-o", str(obj)], check=True)
        header = readelf("-h", str(obj))
        assert header_field(header, "Class") == elf_class and header_field(header, "Machine") == machine, header
        assert (target.elf_class, target.elf_machine) == (elf_class, machine)
    if name == "armv7":  # hard-float NEON/VFPv4 with IEEE half precision, as the README's table says
        attributes = readelf("-A", str(obj))
        for line in ("Tag_FP_arch: VFPv4", "Tag_Advanced_SIMD_arch: NEONv1 with Fused-MAC",
                     "Tag_ABI_VFP_args: VFP registers", "Tag_ABI_FP_16bit_format: IEEE 754"):
            assert line in attributes, attributes
        assert set(target.elf_attributes) <= {l.strip() for l in attributes.splitlines()}


CXX_SOURCE = '#include <iostream>\n#include <string>\nint main() { std::cout << std::to_string(3 * 2 + 1) << "\\n"; }\n'


@pytest.mark.parametrize("name", list(MACHINES))
def test_programs_for_the_target_run_through_its_emulator(name, tmp_path):
    """A C and a C++ program (libstdc++), linked by the model's compilers and run with its emulator
    prefix (QEMU with -L the target's sysroot on ARM), print what they compute."""
    target = TARGETS[name]
    for compiler, source_name, text in ((target.cc, "scale.c", C_SOURCE), (target.cxx, "seven.cpp", CXX_SOURCE)):
        source = tmp_path / source_name
        source.write_text(text)
        program = tmp_path / source.stem
        subprocess.run([compiler, *target.compiler_flags, str(source), "-o", str(program)], check=True)
        assert header_field(readelf("-h", str(program)), "Machine") == MACHINES[name][2]
        ran = subprocess.run([*target.emulator, str(program)], capture_output=True, text=True, timeout=120)
        assert (ran.returncode, ran.stdout) == (0, "7\n"), (compiler, ran.stderr)
    assert (target.emulator[0] if target.emulator else None) == {"x86_64": None, "armv7": "qemu-arm",
                                                                  "arm64": "qemu-aarch64"}[name]


@pytest.mark.parametrize("name", list(MACHINES))
def test_each_tool_is_provided_by_the_debian_package_the_model_names(name):
    """dpkg's own database says which package installed each tool (what doctor tells the user to install)."""
    for tool, package in TARGETS[name].debian_packages.items():
        path = shutil.which(tool)
        assert path, f"{tool} is not on PATH"
        owner = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True)
        if owner.returncode != 0 and Path(path).parent != Path("/usr/bin"):
            owner = subprocess.run(["dpkg", "-S", f"/usr/bin/{tool}"], capture_output=True, text=True)
        assert owner.returncode == 0, owner.stderr
        assert owner.stdout.split(":", 1)[0].split(", ") == [package], (tool, owner.stdout)
