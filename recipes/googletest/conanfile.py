from conan import ConanFile

required_conan_version = ">=2.1"


class GoogletestSourceConan(ConanFile):
    """googletest as a verified *source* package: NNPACK's tests build it with their own flags
    (ADD_SUBDIRECTORY of GOOGLETEST_SOURCE_DIR = <package>/source), so one package serves every target."""

    name = "googletest"
    description = "Google Testing and Mocking Framework (sources, for NNPACK's test suite)"
    license = "BSD-3-Clause"
    homepage = "https://github.com/google/googletest"
    python_requires = "nntc-base/1.0"
    python_requires_extend = "nntc-base.VerbatimPackage"
    package_type = "build-scripts"
    packaged_files = (("*", ".", "source"),)
