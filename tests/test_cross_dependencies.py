"""Real cross compilers and QEMU on real upstream code, for every target, without NNPACK itself.

cpuinfo and pthreadpool come from pinned sources that Debian also ships (so `invoke fetch` gets
them even where GitHub is out of reach); each is cross-built by its recipe and its Meson
test_package runs on the target: natively on x86-64, under QEMU (exe_wrapper) on ARM.
"""

import pytest

from conftest import require_sources
from nnpack_toolchain import conan_config
from nnpack_toolchain.targets import TARGETS


@pytest.mark.parametrize("target_name", list(TARGETS))
def test_pthreadpool_and_cpuinfo_run_on_target(target_name, build_settings, tmp_path):
    require_sources("cpuinfo", "pthreadpool", "fxdiv")
    target = TARGETS[target_name]
    conan_config.prepare_home(build_settings, target)
    log_path = tmp_path / "conan.log"
    conan_config.export_recipes(build_settings, ["cpuinfo", "pthreadpool", "fxdiv"], log_path)
    for recipe in ("cpuinfo", "pthreadpool"):
        conan_config.create(target, build_settings, recipe, log_path)
    log = log_path.read_text()
    assert log.count("meson tests passed: 1") == 2, log[-3000:]
    assert "cpuinfo-under-target OK" in log and "pthreadpool-under-target OK" in log
    if not target.is_native:
        # The wrapper really ran the ARM binaries (Meson would otherwise skip them).
        assert "needs_exe_wrapper = true" in (build_settings.conan_home / "machine-files" / f"{target.name}.ini").read_text()
