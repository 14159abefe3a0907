from conan import ConanFile

required_conan_version = ">=2.1"


class Fp16Conan(ConanFile):
    name = "fp16"
    description = "Conversion to/from half-precision floating point formats"
    license = "MIT"
    homepage = "https://github.com/Maratyszcza/FP16"
    python_requires = "nntc-base/1.0"
    python_requires_extend = "nntc-base.VerbatimPackage"
    # Also the PeachPy modules: NNPACK's x86-64 kernels import fp16.avx / fp16.avx2 at build time.
    packaged_files = (("*.h", "include", "include"), ("*.py", "include", "include"))

    def requirements(self):
        self.requires("psimd/0.0.0.cci.20200517")
