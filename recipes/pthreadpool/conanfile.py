from conan import ConanFile
from conan.tools.cmake import CMakeDeps, CMakeToolchain

required_conan_version = ">=2.1"


class PthreadpoolConan(ConanFile):
    name = "pthreadpool"
    description = "Portable (POSIX/Windows/Emscripten) thread pool for C/C++"
    license = "BSD-2-Clause"
    homepage = "https://github.com/Maratyszcza/pthreadpool"
    python_requires = "nntc-base/1.0"
    python_requires_extend = "nntc-base.CMakeLibraryRecipe"

    def requirements(self):
        self.requires("fxdiv/0.0.0.cci.20200417")

    def generate(self):
        tc = CMakeToolchain(self)
        tc.cache_variables["PTHREADPOOL_LIBRARY_TYPE"] = "static"
        tc.cache_variables["PTHREADPOOL_BUILD_TESTS"] = False
        tc.cache_variables["PTHREADPOOL_BUILD_BENCHMARKS"] = False
        self.python_requires["nntc-base"].module.import_dependency_targets(self, tc, ["fxdiv"])
        tc.generate()
        CMakeDeps(self).generate()

    def package_info(self):
        self.cpp_info.set_property("cmake_file_name", "pthreadpool")
        self.cpp_info.set_property("cmake_target_name", "pthreadpool::pthreadpool")
        self.cpp_info.set_property("pkg_config_name", "pthreadpool")
        self.cpp_info.libs = ["pthreadpool"]
        self.cpp_info.system_libs = ["pthread"]
        self.cpp_info.requires = ["fxdiv::fxdiv"]
