from conan import ConanFile

required_conan_version = ">=2.1"


class PsimdConan(ConanFile):
    name = "psimd"
    description = "Portable 128-bit SIMD intrinsics"
    license = "MIT"
    homepage = "https://github.com/Maratyszcza/psimd"
    python_requires = "nntc-base/1.0"
    python_requires_extend = "nntc-base.VerbatimPackage"
