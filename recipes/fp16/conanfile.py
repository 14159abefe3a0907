from conan import ConanFile
from conan.tools.files import copy
from conan.tools.layout import basic_layout

required_conan_version = ">=2.1"


class Fp16Conan(ConanFile):
    name = "fp16"
    description = "Conversion to/from half-precision floating point formats"
    license = "MIT"
    homepage = "https://github.com/Maratyszcza/FP16"
    python_requires = "nntc-base/1.0"
    python_requires_extend = "nntc-base.PinnedSourceRecipe"
    package_type = "header-library"
    no_copy_source = True

    def requirements(self):
        self.requires("psimd/cci.20200517")

    def layout(self):
        basic_layout(self, src_folder="src")

    def package_id(self):
        self.info.clear()

    def package(self):
        copy(self, "LICENSE", src=self._sources, dst=f"{self.package_folder}/licenses")
        copy(self, "*.h", src=f"{self._sources}/include", dst=f"{self.package_folder}/include")
        # PeachPy modules: NNPACK's x86-64 kernels import fp16.avx / fp16.avx2 at build time
        copy(self, "*.py", src=f"{self._sources}/include", dst=f"{self.package_folder}/include")

    def package_info(self):
        self.cpp_info.set_property("cmake_file_name", "fp16")
        self.cpp_info.set_property("cmake_target_name", "fp16::fp16")
        self.cpp_info.bindirs = []
        self.cpp_info.libdirs = []
