import os
import shlex
import sys

from conan import ConanFile
from conan.errors import ConanInvalidConfiguration
from conan.tools.cmake import CMake, CMakeDeps, CMakeToolchain, cmake_layout
from conan.tools.files import copy, save

required_conan_version = ">=2.1"

FAST_BACKEND = {"x86_64": "x86-64", "armv8": "neon", "armv7hf": "neon"}
TESTS_CONF = "user.nntc:nnpack_tests"  # quick | all | none


class NnpackConan(ConanFile):
    name = "nnpack"
    description = "Acceleration package for neural networks on multi-core CPUs"
    license = "BSD-2-Clause"
    homepage = "https://github.com/Maratyszcza/NNPACK"
    python_requires = "nntc-base/1.0"
    python_requires_extend = "nntc-base.PinnedSourceRecipe"
    package_type = "library"
    settings = "os", "arch", "compiler", "build_type"
    options = {
        "shared": [True, False],
        "fPIC": [True, False],
        # "fast" = the target's fast kernels: AVX2/FMA3 (x86-64), NEON (ARMv7, ARM64)
        "backend": ["fast", "x86-64", "neon", "psimd", "scalar"],
    }
    default_options = {"shared": True, "fPIC": True, "backend": "fast"}

    @property
    def _backend(self):
        if self.options.backend == "fast":
            return FAST_BACKEND.get(str(self.settings.arch), "psimd")
        return str(self.options.backend)

    @property
    def _tests(self):
        return self.conf.get(TESTS_CONF, default="quick", choices=["quick", "all", "none"])

    def configure(self):
        if self.options.shared:
            self.options.rm_safe("fPIC")

    def layout(self):
        cmake_layout(self, src_folder="src")

    def validate(self):
        arch = str(self.settings.arch)
        if self._backend == "x86-64" and arch != "x86_64":
            raise ConanInvalidConfiguration(f"backend x86-64 needs arch x86_64, not {arch}")
        if self._backend == "neon" and not arch.startswith("arm"):
            raise ConanInvalidConfiguration(f"backend neon needs an ARM arch, not {arch}")

    def requirements(self):
        self.requires("pthreadpool/0.0.0.cci.20240616", transitive_headers=True)
        self.requires("cpuinfo/0.0.0.cci.20250905")
        self.requires("fxdiv/0.0.0.cci.20200417")
        self.requires("psimd/0.0.0.cci.20200517")
        self.requires("fp16/0.0.0.cci.20200514")

    def build_requirements(self):
        self.test_requires("googletest/1.12.1")
        if self._backend == "x86-64":
            self.tool_requires("peachpy/0.0.0.cci.20211013")
            self.tool_requires("six/1.16.0")

    def generate(self):
        tc = CMakeToolchain(self)
        tc.cache_variables["NNPACK_LIBRARY_TYPE"] = "shared" if self.options.shared else "static"
        tc.cache_variables["NNPACK_BACKEND"] = self._backend
        tc.cache_variables["NNPACK_BUILD_TESTS"] = self._tests != "none"
        tc.cache_variables["NNPACK_BUILD_BENCHMARKS"] = False
        tc.cache_variables["CMAKE_POSITION_INDEPENDENT_CODE"] = True  # static deps in a .so
        self.python_requires["nntc-base"].module.import_dependency_targets(
            self, tc, ["cpuinfo", "pthreadpool", "fxdiv", "psimd", "fp16"]
        )
        gtest = self.dependencies["googletest"]
        tc.cache_variables["GOOGLETEST_SOURCE_DIR"] = os.path.join(gtest.package_folder, "source")
        if self._backend == "x86-64":
            # Always pass it: CMake's FindPythonInterp picks whichever python is active, and
            # without one NNPACK silently falls back to the slow psimd backend.
            tc.cache_variables["PYTHON_EXECUTABLE"] = sys.executable
            tc.cache_variables["PYTHON_PEACHPY_SOURCE_DIR"] = self.dependencies.build["peachpy"].package_folder
            tc.cache_variables["PYTHON_SIX_SOURCE_DIR"] = self.dependencies.build["six"].package_folder
        tc.generate()
        CMakeDeps(self).generate()

    def build(self):
        cmake = CMake(self)
        cmake.configure(build_script_folder=self._sources)
        cmake.build()
        self._run_test_suite(cmake)

    def _run_test_suite(self, cmake):
        if self._tests == "none":
            return
        args = ["--output-on-failure", "--no-tests=error"]
        if self._tests == "quick":
            args += ["-E", shlex.quote(self.conan_data["tests"]["slow_regex"])]
        junit = os.path.join(self.build_folder, "nnpack-tests.xml")
        cmake.ctest(cli_args=args + ["--output-junit", shlex.quote(junit)])

    def package(self):
        copy(self, "LICENSE", src=self._sources, dst=os.path.join(self.package_folder, "licenses"))
        copy(self, "nnpack.h", src=os.path.join(self._sources, "include"),
             dst=os.path.join(self.package_folder, "include"))
        # nnpack.h includes pthreadpool.h, and libnnpack.so contains pthreadpool: ship its header.
        for include in self.dependencies["pthreadpool"].cpp_info.includedirs:
            copy(self, "pthreadpool.h", src=include, dst=os.path.join(self.package_folder, "include"))
        for pattern in ("libnnpack.so*", "libnnpack.a"):
            copy(self, pattern, src=self.build_folder, dst=os.path.join(self.package_folder, "lib"), keep_path=False,
                 excludes=("*/_deps/*",))
        junit = os.path.join(self.build_folder, "nnpack-tests.xml")
        if os.path.isfile(junit):
            copy(self, "nnpack-tests.xml", src=self.build_folder, dst=os.path.join(self.package_folder, "res"))
        save(self, os.path.join(self.package_folder, "res", "nnpack-build.txt"),
             f"backend={self._backend}\ntests={self._tests}\ncommit={self.conan_data['sources'][self.version]['commit']}\n"
             f"source={'local:' + self._local_source_dir if self._local_source_dir else 'pinned'}\n")

    def package_info(self):
        self.cpp_info.set_property("cmake_file_name", "nnpack")
        self.cpp_info.set_property("cmake_target_name", "nnpack::nnpack")
        self.cpp_info.set_property("pkg_config_name", "nnpack")
        self.cpp_info.libs = ["nnpack"]
        # libnnpack.so has no NEEDED libm: consumers must link -lm and -lpthread.
        self.cpp_info.system_libs = ["m", "pthread"]
