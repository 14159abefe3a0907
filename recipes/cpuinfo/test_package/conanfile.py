from conan import ConanFile


class TestPackageConan(ConanFile):
    python_requires = "nntc-base/1.0"
    python_requires_extend = "nntc-base.MesonTestPackage"
