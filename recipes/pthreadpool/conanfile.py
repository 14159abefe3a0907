from conan import ConanFile
from conan.tools.cmake import CMake, CMakeDeps, CMakeToolchain, cmake_layout

required_conan_version = ">=2.1"


class PthreadpoolConan(ConanFile):
    name = "pthreadpool"
    description = "Portable (POSIX/Windows/Emscripten) thread pool for C/C++"
    license = "BSD-2-Clause"
    homepage = "https://github.com/Maratyszcza/pthreadpool"
    python_requires = "nntc-base/1.0"
    python_requires_extend = "nntc-base.PinnedSourceRecipe"
    package_type = "static-library"
    settings = "os", "arch", "compiler", "build_type"
    options = {"fPIC": [True, False]}
    default_options = {"fPIC": True}  # linked into libnnpack.so

    def layout(self):
        cmake_layout(self, src_folder="src")

    def requirements(self):
        self.requires("fxdiv/cci.20200417")

    def generate(self):
        tc = CMakeToolchain(self)
        tc.cache_variables["PTHREADPOOL_LIBRARY_TYPE"] = "static"
        tc.cache_variables["PTHREADPOOL_BUILD_TESTS"] = False
        tc.cache_variables["PTHREADPOOL_BUILD_BENCHMARKS"] = False
        self.python_requires["nntc-base"].module.import_dependency_targets(self, tc, ["fxdiv"])
        tc.generate()
        CMakeDeps(self).generate()

    def build(self):
        cmake = CMake(self)
        cmake.configure(build_script_folder=self._sources)
        cmake.build()

    def package(self):
        CMake(self).install()

    def package_info(self):
        self.cpp_info.set_property("cmake_file_name", "pthreadpool")
        self.cpp_info.set_property("cmake_target_name", "pthreadpool::pthreadpool")
        self.cpp_info.set_property("pkg_config_name", "pthreadpool")
        self.cpp_info.libs = ["pthreadpool"]
        self.cpp_info.system_libs = ["pthread"]
        self.cpp_info.requires = ["fxdiv::fxdiv"]
