import os

from conan import ConanFile
from conan.tools.files import copy
from conan.tools.layout import basic_layout

required_conan_version = ">=2.1"


class OpcodesConan(ConanFile):
    """Build-time Python module for NNPACK's x86-64 kernel generator (PeachPy)."""

    name = "opcodes"
    description = "Opcodes database for x86-64 instructions (used by PeachPy's code generator)"
    license = "BSD-2-Clause"
    homepage = "https://github.com/Maratyszcza/Opcodes"
    python_requires = "nntc-base/1.0"
    python_requires_extend = "nntc-base.PinnedSourceRecipe"
    package_type = "build-scripts"
    no_copy_source = True

    def layout(self):
        basic_layout(self, src_folder="src")

    def package_id(self):
        self.info.clear()

    def package(self):
        copy(self, "LICENSE*", src=self._sources, dst=os.path.join(self.package_folder, "licenses"))
        copy(self, "opcodes/*", src=self._sources, dst=self.package_folder)

    def package_info(self):
        self.cpp_info.includedirs = []
        self.cpp_info.libdirs = []
        self.cpp_info.bindirs = []
        self.buildenv_info.prepend_path("PYTHONPATH", self.package_folder)
