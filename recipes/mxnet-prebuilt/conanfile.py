"""MXNet 1.9.1 with NNPACK for one target, as the toolchain's own MXNet and wheel stages built it
(src/nnpack_toolchain/mxnet.py, wheel.py): libmxnet.so, MXNet's patched Python package, the wheel
and its SBOM. A binary-only package (`conan export-pkg`, see src/nnpack_toolchain/prebuilt.py), so
that one machine builds it and every other one downloads it.

The options are digests of every input of the MXNet stage, so the package id is the build's
identity: a consumer whose inputs differ in one of them finds no package, builds locally and is
told which input differs (prebuilt.py compares its options with the remote's packages).
"""

from conan import ConanFile
from conan.errors import ConanInvalidConfiguration
from conan.tools.files import copy

INPUTS = ("source", "patches", "config", "nnpack", "toolchain", "wheel")


class MxnetNnpackPrebuiltConan(ConanFile):
    name = "mxnet-nnpack"
    version = "1.9.1"
    package_type = "shared-library"
    license = "Apache-2.0"
    url = "https://github.com/apache/mxnet"
    description = "Apache MXNet 1.9.1 built with USE_NNPACK=1 and the project's patch series, and its wheel"
    settings = "os", "arch"
    options = {name: [None, "ANY"] for name in INPUTS}
    default_options = {name: None for name in INPUTS}
    build_policy = "never"

    def validate(self):
        missing = [name for name in INPUTS if self.options.get_safe(name) is None]
        if missing:
            raise ConanInvalidConfiguration(f"input digests missing: {', '.join(missing)} (set by prebuilt.py)")

    def package(self):
        artifacts = self.conf.get("user.nntc:artifacts", check_type=str)
        if not artifacts:
            raise ConanInvalidConfiguration("conf user.nntc:artifacts (the staged build) is not set")
        copy(self, "*", src=artifacts, dst=self.package_folder)
