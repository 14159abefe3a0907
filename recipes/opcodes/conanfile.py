from conan import ConanFile

required_conan_version = ">=2.1"


class OpcodesConan(ConanFile):
    """Build-time Python module: the instruction database PeachPy's code generator reads."""

    name = "opcodes"
    description = "Opcodes database for x86-64 instructions"
    license = "BSD-2-Clause"
    homepage = "https://github.com/Maratyszcza/Opcodes"
    python_requires = "nntc-base/1.0"
    python_requires_extend = "nntc-base.VerbatimPackage"
    package_type = "build-scripts"
    packaged_files = (("opcodes/*", ".", "."),)
    python_path = True
