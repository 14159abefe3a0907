import json

from nnpack_toolchain import conan_config
from nnpack_toolchain.settings import Settings
from nnpack_toolchain.targets import TARGETS


def conf_lines(text: str) -> dict[str, str]:
    body = text.split("[conf]", 1)[1]
    return dict(line.split("=", 1) for line in body.splitlines() if "=" in line)


def test_profiles_come_from_the_target_model(tmp_path):
    settings = Settings(home=tmp_path)
    for target in TARGETS.values():
        conan_config.prepare_home(settings, target)
    profiles = tmp_path / "conan" / "profiles"
    armv7 = (profiles / "nntc-armv7").read_text()
    assert "arch=armv7hf" in armv7
    conf = conf_lines(armv7)
    assert conf["tools.cmake.cmaketoolchain:system_processor"] == "armv7l"
    assert json.loads(conf["tools.build:cflags"]) == list(TARGETS["armv7"].compiler_flags)
    extra = json.loads(conf["tools.cmake.cmaketoolchain:extra_variables"])
    assert extra["CMAKE_CROSSCOMPILING_EMULATOR"] == "qemu-arm;-L;/usr/arm-linux-gnueabihf"
    assert conf["tools.build.cross_building:can_run"] == "True"
    x86 = conf_lines((profiles / "nntc-x86_64").read_text())
    assert "CMAKE_CROSSCOMPILING_EMULATOR" not in json.loads(x86["tools.cmake.cmaketoolchain:extra_variables"])
    assert "tools.build.cross_building:can_run" not in x86
    assert "sources" in (tmp_path / "conan" / "global.conf").read_text()
    assert json.loads((tmp_path / "conan" / "remotes.json").read_text()) == {"remotes": []}


def test_machine_file_forces_the_qemu_wrapper(tmp_path):
    text = conan_config.machine_file(TARGETS["arm64"])
    assert "needs_exe_wrapper = true" in text
    assert "exe_wrapper = ['qemu-aarch64', '-L', '/usr/aarch64-linux-gnu']" in text
    assert "exe_wrapper" not in conan_config.machine_file(TARGETS["x86_64"])


def test_unchanged_files_are_not_rewritten(tmp_path):
    settings = Settings(home=tmp_path)
    conan_config.prepare_home(settings, TARGETS["arm64"])
    profile = tmp_path / "conan" / "profiles" / "nntc-arm64"
    before = profile.stat().st_mtime_ns
    conan_config.prepare_home(settings, TARGETS["arm64"])
    assert profile.stat().st_mtime_ns == before
    assert conan_config.write_if_changed(profile, "changed\n") is True
    assert conan_config.write_if_changed(profile, "changed\n") is False
