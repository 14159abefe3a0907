import os
import sys

from conan import ConanFile
from conan.tools.env import Environment
from conan.tools.files import copy
from conan.tools.layout import basic_layout

required_conan_version = ">=2.1"


class PeachpyConan(ConanFile):
    """PeachPy, the x86-64 assembler in Python that generates NNPACK's AVX2/FMA3 kernels.

    build() runs PeachPy's instruction-class generator (what `setup.py generate` does) with the
    pinned opcodes and six, so the packaged tree is ready for `python -m peachpy.x86_64`.
    """

    name = "peachpy"
    description = "Portable Efficient Assembly Code-generator in Higher-level Python"
    license = "BSD-2-Clause"
    homepage = "https://github.com/Maratyszcza/PeachPy"
    python_requires = "nntc-base/1.0"
    python_requires_extend = "nntc-base.PinnedSourceRecipe"
    package_type = "build-scripts"

    def layout(self):
        basic_layout(self, src_folder="src")

    def build_requirements(self):
        self.tool_requires("opcodes/0.3.14")
        self.tool_requires("six/1.16.0")

    def package_id(self):
        self.info.clear()

    def build(self):
        tree = os.path.join(self.build_folder, "peachpy-tree")
        copy(self, "*", src=self._sources, dst=tree)
        env = Environment()
        for dep in ("opcodes", "six"):
            env.prepend_path("PYTHONPATH", self.dependencies.build[dep].package_folder)
        with env.vars(self).apply():
            self.run(f'"{sys.executable}" -m codegen.x86_64', cwd=tree)

    def package(self):
        tree = os.path.join(self.build_folder, "peachpy-tree")
        copy(self, "LICENSE*", src=tree, dst=os.path.join(self.package_folder, "licenses"))
        copy(self, "peachpy/*", src=tree, dst=self.package_folder)

    def package_info(self):
        self.cpp_info.includedirs = []
        self.cpp_info.libdirs = []
        self.cpp_info.bindirs = []
        self.buildenv_info.prepend_path("PYTHONPATH", self.package_folder)
