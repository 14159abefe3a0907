from conan import ConanFile
from conan.tools.cmake import CMakeToolchain

required_conan_version = ">=2.1"


class CpuinfoConan(ConanFile):
    name = "cpuinfo"
    description = "CPU INFOrmation library (x86/x86-64/ARM/ARM64, Linux/Windows/Android/macOS/iOS)"
    license = "BSD-2-Clause"
    homepage = "https://github.com/pytorch/cpuinfo"
    python_requires = "nntc-base/1.0"
    python_requires_extend = "nntc-base.CMakeLibraryRecipe"

    def generate(self):
        tc = CMakeToolchain(self)
        tc.cache_variables["CPUINFO_LIBRARY_TYPE"] = "static"
        tc.cache_variables["CPUINFO_RUNTIME_TYPE"] = "static"
        tc.cache_variables["CPUINFO_LOG_LEVEL"] = "error"
        for part in ("TOOLS", "UNIT_TESTS", "MOCK_TESTS", "BENCHMARKS"):
            tc.cache_variables[f"CPUINFO_BUILD_{part}"] = False
        tc.generate()

    def package_info(self):
        self.cpp_info.set_property("cmake_file_name", "cpuinfo")
        self.cpp_info.set_property("cmake_target_name", "cpuinfo::cpuinfo")
        self.cpp_info.set_property("pkg_config_name", "libcpuinfo")
        self.cpp_info.libs = ["cpuinfo"]
        self.cpp_info.system_libs = ["pthread"]
