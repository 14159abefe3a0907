"""What the wheel stage reads from ELF files (pyelftools): the machine a library is for, and
whether it calls libatomic without linking it.

64-bit atomics (`std::atomic<int64_t>`, MXNet #18536): GCC inlines them on ARMv7-A (LDREXD and
STREXD) and on AArch64/x86-64, but on older ARM cores or with some code patterns it emits calls
to `__atomic_load_8` and friends, which live in libatomic.so.1, not in libc. A library with such
calls that does not list libatomic as NEEDED loads on a system where something else happened to
load libatomic first and fails elsewhere ("undefined symbol: __atomic_load_8").

Executable stacks: a library whose PT_GNU_STACK segment has PF_X (or that has none, as assembly
without a `.note.GNU-stack` section gives) asks for an executable stack. glibc 2.41 (Debian 13)
refuses to dlopen it ("cannot enable executable stack as shared object requires"); older glibc
makes the whole process's stacks executable.
"""

from __future__ import annotations

import io
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.descriptions import describe_e_machine
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from elftools.elf.segments import Segment

from .targets import TARGETS


def elf_kind(header: bytes) -> str | None:
    """'ELF64 AArch64' (class and machine as readelf -h, i.e. Target.elf_class/elf_machine, name them)
    from an ELF header; None when it is not ELF."""
    try:
        elf = ELFFile(io.BytesIO(header))
    except ELFError:
        return None
    return f"ELF{elf.elfclass} {describe_e_machine(elf.header['e_machine'])}"


def describe_kind(kind: str | None) -> str:
    if kind is None:
        return "not an ELF file"
    for target in TARGETS.values():
        if kind == f"{target.elf_class} {target.elf_machine}":
            return f"an ELF object for {target.name}"
    return f"an {kind} object"


def unlinked_atomics(library: bytes) -> list[str]:
    """The `__atomic_*` functions the library calls (undefined dynamic symbols) when none of its
    NEEDED libraries is libatomic; [] when it needs none or links it (auditwheel then grafts it)."""
    elf = ELFFile(io.BytesIO(library))
    needed: list[str] = []
    undefined: set[str] = set()
    for section in elf.iter_sections():
        if isinstance(section, DynamicSection):
            needed += [tag.needed for tag in section.iter_tags() if tag.entry.d_tag == "DT_NEEDED"]
        if section.name == ".dynsym":
            undefined |= {s.name for s in section.iter_symbols()
                          if s.name.startswith("__atomic_") and s["st_shndx"] == "SHN_UNDEF"}
    if any(Path(name).name.startswith("libatomic") for name in needed):
        return []
    return sorted(undefined)


PF_X = 0x1


def requests_executable_stack(library: bytes) -> bool:
    """Whether loading the library asks for an executable stack: PT_GNU_STACK with PF_X, or no
    PT_GNU_STACK where glibc's default stack is executable (every target here but AArch64)."""
    elf = ELFFile(io.BytesIO(library))
    stacks: list[Segment] = [s for s in elf.iter_segments() if s["p_type"] == "PT_GNU_STACK"]
    if not stacks:
        return elf.header["e_machine"] != "EM_AARCH64"
    return any(s["p_flags"] & PF_X for s in stacks)
