"""The base distributions: which Debian release a build's compilers and target libraries come
from, and so which glibc (manylinux) floor its wheels have; and which releases' Pythons the smoke
tests run on. Data only: adding a floor or a distribution is one more `Distribution` entry.

Debian's GCC for a release builds against that release's glibc and libstdc++, so a wheel built
with Debian 11's GCC 10 against its glibc 2.31 needs nothing newer: manylinux_2_31 (Debian 11,
Raspberry Pi OS bullseye, Ubuntu 20.04, Jetson JetPack 5). auditwheel's manylinux_2_31 policy
allows GLIBCXX up to 3.4.28, which is GCC 10's libstdc++.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigurationError


@dataclass(frozen=True)
class Distribution:
    name: str
    """What users type: debian11, debian12, debian13."""
    suite: str
    """Debian's code name, as in its archive: bullseye, bookworm, trixie."""
    glibc: str
    gcc: str
    """The release's GCC major version (its cross compilers are gcc-N-<triple>)."""
    glibcxx: str
    """The newest GLIBCXX symbol version of that GCC's libstdc++."""
    python: str
    """The release's python3 (the smoke tests' interpreter on a board of this release)."""
    numpy: str
    """The release's python3-numpy (major.minor)."""
    boards: str
    """Who runs this release (for the README and error messages)."""

    @property
    def manylinux(self) -> str:
        """The manylinux floor of wheels built against this release's glibc."""
        return "manylinux_" + self.glibc.replace(".", "_")


DISTRIBUTIONS: dict[str, Distribution] = {
    d.name: d
    for d in (
        Distribution("debian11", "bullseye", glibc="2.31", gcc="10", glibcxx="3.4.28", python="3.9", numpy="1.19",
                     boards="Debian 11, Raspberry Pi OS bullseye, Ubuntu 20.04, Jetson JetPack 5"),
        Distribution("debian12", "bookworm", glibc="2.36", gcc="12", glibcxx="3.4.30", python="3.11", numpy="1.24",
                     boards="Debian 12, Raspberry Pi OS bookworm, Ubuntu 22.04 and later, Jetson JetPack 6"),
        Distribution("debian13", "trixie", glibc="2.41", gcc="14", glibcxx="3.4.33", python="3.13", numpy="2.2",
                     boards="Debian 13"),
    )
}

DEFAULT_BUILD = "debian11"
"""The widest floor: what `invoke build` uses unless told otherwise."""
SMOKE_RELEASES = ("debian11", "debian12", "debian13")
"""The target Pythons every wheel is smoke-tested on."""


def parse_distribution(name: str) -> Distribution:
    key = name.strip().lower()
    for distribution in DISTRIBUTIONS.values():
        if key in (distribution.name, distribution.suite):
            return distribution
    known = ", ".join(f"{d.name} ({d.suite}, glibc {d.glibc})" for d in DISTRIBUTIONS.values())
    raise ConfigurationError(f"unknown base distribution {name!r}; choose one of {known}")
