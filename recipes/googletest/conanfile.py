import os

from conan import ConanFile
from conan.tools.files import copy
from conan.tools.layout import basic_layout

required_conan_version = ">=2.1"


class GoogletestSourceConan(ConanFile):
    """googletest as a verified *source* package: NNPACK's tests build it with their own flags
    (ADD_SUBDIRECTORY of GOOGLETEST_SOURCE_DIR), so one package serves every target."""

    name = "googletest"
    description = "Google Testing and Mocking Framework (sources, for NNPACK's test suite)"
    license = "BSD-3-Clause"
    homepage = "https://github.com/google/googletest"
    python_requires = "nntc-base/1.0"
    python_requires_extend = "nntc-base.PinnedSourceRecipe"
    package_type = "build-scripts"
    no_copy_source = True

    def layout(self):
        basic_layout(self, src_folder="src")

    def package_id(self):
        self.info.clear()

    def package(self):
        copy(self, "LICENSE", src=self._sources, dst=os.path.join(self.package_folder, "licenses"))
        copy(self, "*", src=self._sources, dst=os.path.join(self.package_folder, "source"))

    def package_info(self):
        self.cpp_info.includedirs = []
        self.cpp_info.libdirs = []
        self.cpp_info.bindirs = []
        self.conf_info.define("user.nntc:googletest_source_dir", os.path.join(self.package_folder, "source"))
