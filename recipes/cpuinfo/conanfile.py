from conan import ConanFile
from conan.tools.cmake import CMake, CMakeToolchain, cmake_layout

required_conan_version = ">=2.1"


class CpuinfoConan(ConanFile):
    name = "cpuinfo"
    description = "CPU INFOrmation library (x86/x86-64/ARM/ARM64, Linux/Windows/Android/macOS/iOS)"
    license = "BSD-2-Clause"
    homepage = "https://github.com/pytorch/cpuinfo"
    python_requires = "nntc-base/1.0"
    python_requires_extend = "nntc-base.PinnedSourceRecipe"
    package_type = "static-library"
    settings = "os", "arch", "compiler", "build_type"
    options = {"fPIC": [True, False]}
    default_options = {"fPIC": True}  # linked into libnnpack.so

    def layout(self):
        cmake_layout(self, src_folder="src")

    def generate(self):
        tc = CMakeToolchain(self)
        tc.cache_variables["CPUINFO_LIBRARY_TYPE"] = "static"
        tc.cache_variables["CPUINFO_RUNTIME_TYPE"] = "static"
        tc.cache_variables["CPUINFO_LOG_LEVEL"] = "error"
        for part in ("TOOLS", "UNIT_TESTS", "MOCK_TESTS", "BENCHMARKS"):
            tc.cache_variables[f"CPUINFO_BUILD_{part}"] = False
        tc.generate()

    def build(self):
        cmake = CMake(self)
        cmake.configure(build_script_folder=self._sources)
        cmake.build()

    def package(self):
        CMake(self).install()

    def package_info(self):
        self.cpp_info.set_property("cmake_file_name", "cpuinfo")
        self.cpp_info.set_property("cmake_target_name", "cpuinfo::cpuinfo")
        self.cpp_info.set_property("pkg_config_name", "libcpuinfo")
        self.cpp_info.libs = ["cpuinfo"]
        self.cpp_info.system_libs = ["pthread"]
