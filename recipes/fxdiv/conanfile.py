from conan import ConanFile

required_conan_version = ">=2.1"


class FxdivConan(ConanFile):
    name = "fxdiv"
    description = "Header-only library for division via fixed-point multiplication by inverse"
    license = "MIT"
    homepage = "https://github.com/Maratyszcza/FXdiv"
    python_requires = "nntc-base/1.0"
    python_requires_extend = "nntc-base.VerbatimPackage"
