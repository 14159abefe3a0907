"""`meson test` under cross compilation silently skips tests when no exe_wrapper ran them:
the recipes' test helper must treat a SKIP (or no test at all) as a failure."""

import importlib.util
import json

import pytest
from conan.errors import ConanException

from nnpack_toolchain.settings import RECIPES_DIR


def load_base():
    spec = importlib.util.spec_from_file_location("nntc_base", RECIPES_DIR / "base" / "conanfile.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeConanfile:
    def __init__(self, folder):
        self.build_folder = str(folder)
        self.ran = []

        class Output:
            def info(self, message):
                pass

        self.output = Output()

    def run(self, command, cwd=None):
        self.ran.append(command)


def write_testlog(folder, results):
    logs = folder / "meson-logs"
    logs.mkdir(parents=True)
    (logs / "testlog.json").write_text("".join(json.dumps({"name": n, "result": r}) + "\n" for n, r in results))


@pytest.mark.parametrize("results, ok", [
    ([("smoke", "OK")], True),
    ([("smoke", "SKIP")], False),
    ([("smoke", "OK"), ("other", "FAIL")], False),
    ([], False),
])
def test_skip_or_nothing_fails(tmp_path, results, ok):
    base = load_base()
    conanfile = FakeConanfile(tmp_path)
    write_testlog(tmp_path, results)
    if ok:
        base.run_meson_tests(conanfile)
    else:
        with pytest.raises(ConanException):
            base.run_meson_tests(conanfile)
    assert conanfile.ran == ["meson test --print-errorlogs"]
