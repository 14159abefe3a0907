from conan import ConanFile
from conan.tools.files import copy
from conan.tools.layout import basic_layout

required_conan_version = ">=2.1"


class FxdivConan(ConanFile):
    name = "fxdiv"
    description = "Header-only library for division via fixed-point multiplication by inverse"
    license = "BSD-2-Clause"
    homepage = "https://github.com/Maratyszcza/FXdiv"
    python_requires = "nntc-base/1.0"
    python_requires_extend = "nntc-base.PinnedSourceRecipe"
    package_type = "header-library"
    no_copy_source = True

    def layout(self):
        basic_layout(self, src_folder="src")

    def package_id(self):
        self.info.clear()

    def package(self):
        copy(self, "LICENSE", src=self._sources, dst=f"{self.package_folder}/licenses")
        copy(self, "*.h", src=f"{self._sources}/include", dst=f"{self.package_folder}/include")

    def package_info(self):
        self.cpp_info.set_property("cmake_file_name", "fxdiv")
        self.cpp_info.set_property("cmake_target_name", "fxdiv::fxdiv")
        self.cpp_info.bindirs = []
        self.cpp_info.libdirs = []
