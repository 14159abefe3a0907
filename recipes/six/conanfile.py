from conan import ConanFile

required_conan_version = ">=2.1"


class SixConan(ConanFile):
    """Build-time Python module for NNPACK's x86-64 kernel generator (PeachPy)."""

    name = "six"
    description = "Python 2 and 3 compatibility utilities"
    license = "MIT"
    homepage = "https://github.com/benjaminp/six"
    python_requires = "nntc-base/1.0"
    python_requires_extend = "nntc-base.VerbatimPackage"
    package_type = "build-scripts"
    packaged_files = (("six.py", ".", "."),)
    python_path = True
