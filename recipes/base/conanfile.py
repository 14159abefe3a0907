"""nntc-base: what every recipe of this project shares (python_requires).

- Sources: `conandata.yml` lists, per version, the upstream commit and one or more *mirrors* of
  the same commit (the upstream archive URL, Debian's .orig tarball, PyPI's sdist), each pinned
  by its own sha256. `source()` takes the first mirror already present in Conan's download cache
  (`core.sources:download_cache`, filled and verified by `invoke fetch`), else downloads the first
  URL mirror. Conan checks the sha256 of every download.
- A local source directory (conf `user.nntc:source_dir`) replaces the pinned archive; it is
  copied into the build folder, patched there, and reported as unverified.
- Patches live in the repository's `patches/<package>/` and are listed in conandata.yml with a
  description, as in conan-center-index.
"""

import os

from conan import ConanFile
from conan.errors import ConanException
from conan.tools.files import apply_conandata_patches, copy, get, patch

LOCAL_SOURCE_CONF = "user.nntc:source_dir"
SOURCE_CACHE_CONF = "user.nntc:source_cache"


class PinnedSourceRecipe:
    """Base class (python_requires_extend) for recipes built from pinned upstream sources."""

    def set_version(self):
        # One pinned version per recipe: the only key of conandata.yml's `sources`.
        self.version = self.version or next(iter(self.conan_data["sources"]))

    @property
    def _pinned(self):
        return self.conan_data["sources"][self.version]

    @property
    def _local_source_dir(self):
        return self.conf.get(LOCAL_SOURCE_CONF, check_type=str)

    def export_sources(self):
        patches = os.path.join(self.recipe_folder, "..", "..", "patches", self.name)
        if os.path.isdir(patches):
            copy(self, "*.patch", src=patches, dst=os.path.join(self.export_sources_folder, "patches"))

    def source(self):
        if self._local_source_dir:
            return  # build() copies and patches the local directory instead
        mirror = self._choose_mirror()
        get(
            self,
            url=mirror_url(self.name, mirror),
            sha256=mirror["sha256"],
            filename=mirror["filename"],
            strip_root=True,
        )
        apply_conandata_patches(self)

    def _choose_mirror(self):
        mirrors = self._pinned["mirrors"]
        cache = self.conf.get(SOURCE_CACHE_CONF, check_type=str)
        if cache:
            for mirror in mirrors:
                if os.path.isfile(os.path.join(cache, "s", mirror["sha256"])):
                    return mirror
        for mirror in mirrors:
            if "url" in mirror:
                return mirror
        raise ConanException(
            f"{self.name}/{self.version}: no mirror in the source cache and none downloadable; "
            "run 'invoke fetch'"
        )

    @property
    def _sources(self):
        """Source tree to build from: the pinned (patched) source folder or a patched local copy."""
        local = self._local_source_dir
        if not local:
            return self.source_folder
        tree = os.path.join(self.build_folder, "local-source")
        if not os.path.isdir(tree):
            self.output.warning(f"building from local directory {local} (unverified)")
            copy(self, "*", src=local, dst=tree, excludes=(".git/*", ".git"))
            for entry in self.conan_data.get("patches", {}).get(self.version, []):
                patch(self, base_path=tree, patch_file=os.path.join(self.export_sources_folder, entry["patch_file"]))
        return tree


class VerbatimPackage(PinnedSourceRecipe):
    """A package that is a verified copy of part of its pinned source, the same for every target.

    `packaged_files` lists (pattern, folder in the source, folder in the package). Header-only
    libraries expose `include/` under the CMake target `<name>::<name>`; with `python_path`, the
    package folder goes on PYTHONPATH of consumers that build with it (build-time Python).
    """

    package_type = "header-library"
    no_copy_source = True
    packaged_files = (("*.h", "include", "include"),)
    python_path = False

    def layout(self):
        from conan.tools.layout import basic_layout

        basic_layout(self, src_folder="src")

    def package_id(self):
        self.info.clear()

    def package(self):
        copy(self, "LICENSE*", src=self._sources, dst=os.path.join(self.package_folder, "licenses"))
        for pattern, src, dst in self.packaged_files:
            copy(self, pattern, src=os.path.join(self._sources, src), dst=os.path.join(self.package_folder, dst))

    def package_info(self):
        self.cpp_info.bindirs = []
        self.cpp_info.libdirs = []
        if self.package_type == "header-library":
            self.cpp_info.set_property("cmake_file_name", self.name)
            self.cpp_info.set_property("cmake_target_name", f"{self.name}::{self.name}")
        else:
            self.cpp_info.includedirs = []
        if self.python_path:
            self.buildenv_info.prepend_path("PYTHONPATH", self.package_folder)


class CMakeLibraryRecipe(PinnedSourceRecipe):
    """A static, position-independent library built with the upstream CMake project."""

    package_type = "static-library"
    settings = "os", "arch", "compiler", "build_type"
    options = {"fPIC": [True, False]}
    default_options = {"fPIC": True}  # linked into libnnpack.so

    def layout(self):
        from conan.tools.cmake import cmake_layout

        cmake_layout(self, src_folder="src")

    def build(self):
        from conan.tools.cmake import CMake

        cmake = CMake(self)
        cmake.configure(build_script_folder=self._sources)
        cmake.build()

    def package(self):
        from conan.tools.cmake import CMake

        CMake(self).install()


def mirror_url(name, mirror):
    """The download URL of a mirror; Debian and PyPI mirrors are fetched by their package clients."""
    if "url" in mirror:
        return mirror["url"]
    if "debian" in mirror:
        d = mirror["debian"]
        return f"debian-source:{d['source']}={d['version']}/{mirror['filename']}"
    if "pypi" in mirror:
        p = mirror["pypi"]
        return f"pypi-sdist:{p['name']}=={p['version']}/{mirror['filename']}"
    raise ConanException(f"{name}: mirror without url, debian or pypi entry: {mirror}")


def import_dependency_targets(conanfile, toolchain, names):
    """Make an upstream CMake project link Conan packages instead of downloading its deps.

    Sets CMAKE_PROJECT_INCLUDE to import-targets.cmake and points every `<NAME>_SOURCE_DIR`
    at the package folder, which stops the project's configure-time downloads.
    """
    base = conanfile.python_requires["nntc-base"].path
    toolchain.cache_variables["CMAKE_PROJECT_INCLUDE"] = os.path.join(base, "import-targets.cmake")
    toolchain.cache_variables["NNTC_IMPORT_TARGETS"] = ";".join(names)
    for name in names:
        folder = conanfile.dependencies[name].package_folder
        toolchain.cache_variables[f"{name.upper()}_SOURCE_DIR"] = folder.replace("\\", "/")


class MesonTestPackage:
    """Base class of every test_package: a Meson project whose `meson test` runs on the target.

    Natively on x86-64; on ARM through the `exe_wrapper` (QEMU) of the machine file that the
    host profile adds with `tools.meson.mesontoolchain:extra_machine_files`.
    """

    settings = "os", "arch", "compiler", "build_type"
    test_type = "explicit"

    def requirements(self):
        self.requires(self.tested_reference_str)

    def layout(self):
        from conan.tools.layout import basic_layout

        basic_layout(self)

    def generate(self):
        from conan.tools.gnu import PkgConfigDeps
        from conan.tools.meson import MesonToolchain

        PkgConfigDeps(self).generate()
        MesonToolchain(self).generate()

    def build(self):
        from conan.tools.meson import Meson

        meson = Meson(self)
        meson.configure()
        meson.build()

    def test(self):
        run_meson_tests(self)


class NntcBase(ConanFile):
    name = "nntc-base"
    version = "1.0"
    package_type = "python-require"
    exports = "import-targets.cmake"


def run_meson_tests(conanfile):
    """`meson test` in the build folder; a skipped or missing test is a failure.

    When cross-compiling, Meson silently skips tests (exit 77) unless the machine file names an
    `exe_wrapper` (QEMU for ARM targets): a skip here means the wrapper did not run.
    """
    import json

    conanfile.run("meson test --print-errorlogs", cwd=conanfile.build_folder)
    log = os.path.join(conanfile.build_folder, "meson-logs", "testlog.json")
    with open(log, encoding="utf-8") as stream:
        results = [json.loads(line) for line in stream if line.strip()]
    if not results:
        raise ConanException("meson test ran no test")
    bad = [f"{r['name']}: {r['result']}" for r in results if r["result"] != "OK"]
    if bad:
        raise ConanException("meson tests not OK (a SKIP means no exe_wrapper ran them): " + ", ".join(bad))
    conanfile.output.info(f"meson tests passed: {len(results)} ({', '.join(r['name'] for r in results)})")
