import os

from conan import ConanFile
from conan.tools.files import copy
from conan.tools.layout import basic_layout

required_conan_version = ">=2.1"


class SixConan(ConanFile):
    """Build-time Python module for NNPACK's x86-64 kernel generator (PeachPy)."""

    name = "six"
    description = "Python 2 and 3 compatibility utilities"
    license = "MIT"
    homepage = "https://github.com/benjaminp/six"
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
        copy(self, "six.py", src=self._sources, dst=self.package_folder)

    def package_info(self):
        self.cpp_info.includedirs = []
        self.cpp_info.libdirs = []
        self.cpp_info.bindirs = []
        self.buildenv_info.prepend_path("PYTHONPATH", self.package_folder)
