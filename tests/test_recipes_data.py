"""The pins and patch lists in recipes/*/conandata.yml, checked without building anything."""

import re

import yaml

from nnpack_toolchain.settings import PATCHES_DIR, RECIPES_DIR
from nnpack_toolchain.sources import load_pins

EXPECTED = {"nnpack", "cpuinfo", "pthreadpool", "fp16", "fxdiv", "psimd", "googletest", "peachpy", "six", "opcodes",
            "mxnet"}


def test_every_dependency_has_a_recipe():
    assert set(load_pins()) == EXPECTED


def test_every_source_is_pinned_by_sha256_and_never_a_branch():
    for pin in load_pins().values():
        assert pin.mirrors, pin.name
        for mirror in pin.mirrors:
            assert re.fullmatch(r"[0-9a-f]{64}", mirror.sha256), (pin.name, mirror)
            if mirror.url:
                assert not re.search(r"/(master|main|HEAD)\b", mirror.url), mirror.url
        if pin.commit:
            assert re.fullmatch(r"[0-9a-f]{40}", pin.commit)
            for mirror in pin.mirrors:
                if mirror.url and "/archive/" in mirror.url and "refs/tags" not in mirror.url:
                    assert pin.commit in mirror.url


def test_known_good_pins():
    pins = load_pins()
    assert pins["nnpack"].commit.startswith("70a77f4")
    assert pins["fp16"].commit.startswith("4dfe081")  # before 07ff4fd removed fp16/avx.py
    assert pins["cpuinfo"].commit.startswith("877328f")  # newer ones crash under qemu-user
    assert {p.name for p in pins.values() if p.only_for_backend == "x86-64"} == {"peachpy", "six", "opcodes"}
    assert pins["mxnet"].stage == "mxnet" and pins["mxnet"].version == "1.9.1"
    assert pins["mxnet"].mirrors[0].sha256 == "11ea61328174d8c29b96f341977e03deb0bf4b0c37ace658f93e38d9eb8c9322"


def test_patches_exist_are_described_and_all_listed():
    listed = set()
    for pin in load_pins().values():
        for patch in pin.patches:
            assert patch.file.is_file(), f"{pin.name}: listed patch {patch.file} does not exist"
            assert len(patch.description) > 10, f"{patch.file.name} needs a description"
            assert patch.file.read_text().count("\n+++ ") >= 1
            listed.add(patch.file)
    on_disk = {p for p in PATCHES_DIR.glob("*/*.patch") if p.parent.name in EXPECTED}
    assert on_disk == listed, "every patch in patches/<package>/ must be listed in its conandata.yml"


def test_recipes_have_no_version_but_one_pinned_in_conandata():
    for recipe in RECIPES_DIR.iterdir():
        data_file = recipe / "conandata.yml"
        if data_file.is_file() and (recipe / "conanfile.py").is_file():
            data = yaml.safe_load(data_file.read_text())
            assert len(data["sources"]) == 1
            assert not re.search(r"^    version = ", (recipe / "conanfile.py").read_text(), re.M)
