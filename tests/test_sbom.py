"""The CycloneDX SBOM written next to each wheel (src/nnpack_toolchain/sbom.py, sbom_parts.py)."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import tarfile
import time
from pathlib import Path

import pytest
import yaml
from conftest import shared_source_cache
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from nnpack_toolchain import files
from nnpack_toolchain.sbom import build_sbom, sbom_path, write_sbom
from nnpack_toolchain.sbom_parts import SbomError
from nnpack_toolchain.settings import PATCHES_DIR, PROJECT_ROOT, RECIPES_DIR
from nnpack_toolchain.errors import SourceError
from nnpack_toolchain.sources import SourceCache, load_pins, pins_for_backend, sha256_of
from nnpack_toolchain.sysroot import DebPackage, unpacked_packages
from nnpack_toolchain.targets import parse_target

BUNDLED = [
    ("libopenblasp-r0-5d8b3f2a.3.21.so", "a" * 64),
    ("libgfortran-040039e1.so.5.0.0", "b" * 64),
    ("libgomp-a34b3233.so.1.0.0", "c" * 64),
    ("libquadmath-96973f99.so.0.0.0", "d" * 64),
]


def fake_wheel(tmp_path: Path) -> Path:
    wheel = tmp_path / "mxnet-1.9.1+nnpack.1-py3-none-manylinux_2_28_x86_64.whl"
    wheel.write_bytes(b"not really a zip, but bytes to hash")
    return wheel


def results(target: str = "x86_64") -> tuple[dict, dict]:
    pins = load_pins()
    nnpack = {"target": target, "reference": pins["nnpack"].reference, "backend": parse_target(target).nnpack_backend,
              "library_sha256": "e" * 64, "tests": {"ran": 10, "passed": 10, "failed": 0, "names": []},
              "sources": [f"{p.reference}: source cache (x) [verified sha256]" for p in pins.values()]}
    mxnet = {"target": target, "library_sha256": "f" * 64, "patches": [p.file.name for p in pins["mxnet"].patches],
             "source": f"{pins['mxnet'].reference}: source cache (x) [verified sha256]"}
    return nnpack, mxnet


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict:
    nnpack, mxnet = results()
    return build_sbom("x86_64", wheel_path=fake_wheel(tmp_path_factory.mktemp("wheel")), nnpack_result=nnpack,
                      mxnet_result=mxnet, bundled_libraries=BUNDLED)


def by_ref(doc: dict) -> dict[str, dict]:
    return {c["bom-ref"]: c for c in doc["components"]}


def licence_ids(component: dict) -> list[str]:
    return [entry.get("expression") or entry["license"].get("id") or entry["license"].get("name")
            for entry in component.get("licenses", [])]


def test_document_validates_against_cyclonedx_1_6(document: dict) -> None:
    assert document["specVersion"] == "1.6"
    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(document))
    assert error is None, getattr(error.data, "message", error)


def test_validator_rejects_a_broken_document(document: dict) -> None:
    # The check above can fail: the same validator rejects a damaged copy.
    broken = json.loads(json.dumps(document))
    broken["components"][0]["scope"] = "sometimes"
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(broken)) is not None


def test_wheel_is_the_described_component(document: dict, tmp_path: Path) -> None:
    meta = document["metadata"]["component"]
    wheel = fake_wheel(tmp_path)
    assert (meta["name"], meta["version"], meta["type"]) == ("mxnet", "1.9.1+nnpack.1", "library")
    assert meta["hashes"] == [{"alg": "SHA-256", "content": sha256_of(wheel)}]
    props = {p["name"]: p["value"] for p in meta["properties"]}
    assert props["nntc:target"] == "x86_64" and props["nntc:nnpack-backend"] == "x86-64"
    assert props["nntc:libmxnet-sha256"] == "f" * 64 and props["nntc:libnnpack-sha256"] == "e" * 64
    assert sbom_path(wheel).name == "mxnet-1.9.1+nnpack.1-py3-none-manylinux_2_28_x86_64.cdx.json"


@pytest.mark.parametrize("target", ["x86_64", "arm64", "armv7"])
def test_every_pin_appears_with_version_and_sha256(target: str) -> None:
    doc = build_sbom(target, wheel_path=None, nnpack_result=None, mxnet_result=None)
    components = by_ref(doc)
    backend = parse_target(target).nnpack_backend
    expected = [*pins_for_backend(backend), load_pins()["mxnet"]]
    if target == "x86_64":
        assert {p.name for p in expected} == set(load_pins())  # every pin of the project
    assert {c["name"] for c in components.values() if c["type"] == "library"} == {p.name for p in expected} | {"openblas"}
    for pin in expected:
        component = components[pin.reference]
        assert component["version"] == pin.version
        assert component["hashes"] == [{"alg": "SHA-256", "content": pin.mirrors[0].sha256}]
        distributions = {h["content"] for ref in component["externalReferences"] if ref["type"] == "distribution"
                         for h in ref["hashes"]}
        assert distributions == {m.sha256 for m in pin.mirrors}, pin.name
        if pin.commit and "github.com" in (pin.mirrors[0].url or ""):
            assert component["purl"].startswith("pkg:github/") and component["purl"].endswith(f"@{pin.commit}")
    names = {c["name"] for c in components.values()}
    if target == "x86_64":  # PeachPy generates the AVX2 kernels at build time, with six and opcodes
        assert components["six/1.16.0"]["purl"] == "pkg:pypi/six@1.16.0"
        assert components["opcodes/0.3.14"]["purl"] == "pkg:pypi/opcodes@0.3.14"
        assert {"peachpy", "six", "opcodes"} <= names
    else:  # the NEON backend needs no PeachPy: nothing of it is in the ARM wheel's SBOM
        assert not {"peachpy", "six", "opcodes"} & names, sorted(names)
    assert components["nnpack/0.0.0.cci.20230202"]["purl"] == \
        "pkg:github/maratyszcza/nnpack@70a77f485e8b934224f3a79efd8edcd84cd377b8"
    assert components["mxnet/1.9.1"]["purl"].startswith("pkg:generic/apache-mxnet-src@1.9.1?")
    assert "download_url=https://archive.apache.org/" in components["mxnet/1.9.1"]["purl"]


def test_every_patch_file_is_in_a_pedigree_with_its_description(document: dict) -> None:
    # Independent of load_pins(): the patch files on disk and the descriptions in conandata.yml.
    descriptions = {}
    for conandata in RECIPES_DIR.glob("*/conandata.yml"):
        data = yaml.safe_load(conandata.read_text())
        for entries in (data.get("patches") or {}).values():
            for entry in entries or []:
                descriptions[f"patches/{conandata.parent.name}/{Path(entry['patch_file']).name}"] = entry["patch_description"]
    in_pedigree = {}
    for component in document["components"]:
        for patch in component.get("pedigree", {}).get("patches", []):
            assert patch["type"] in ("unofficial", "backport", "cherry-pick")
            in_pedigree[patch["diff"]["url"]] = patch
    files = sorted(PATCHES_DIR.glob("*/*.patch"))
    assert files, "no patch files found"
    for file in files:
        rel = file.relative_to(PROJECT_ROOT).as_posix()
        assert rel in in_pedigree, f"{rel} is in no component's pedigree"
        patch = in_pedigree[rel]
        assert patch["diff"]["text"]["content"] == file.read_text()
        assert patch["resolves"][0]["description"] == descriptions[rel]
    mxnet = by_ref(document)["mxnet/1.9.1"]
    assert [p["diff"]["url"] for p in mxnet["pedigree"]["patches"]] == \
        [f"patches/mxnet/{p.file.name}" for p in load_pins()["mxnet"].patches]  # in application order


def test_every_component_has_a_licence(document: dict) -> None:
    for component in [*document["components"], document["metadata"]["component"]]:
        assert licence_ids(component), f"{component['bom-ref']} has no licence"
    components = by_ref(document)
    assert licence_ids(components["mxnet/1.9.1"]) == ["Apache-2.0"]
    assert licence_ids(components["openblas"]) == ["BSD-3-Clause"]
    bundled = {c["name"]: licence_ids(c) for c in document["components"] if c["bom-ref"].startswith("bundled:")}
    assert bundled == {
        "libopenblasp-r0-5d8b3f2a.3.21.so": ["BSD-3-Clause"],
        "libgfortran-040039e1.so.5.0.0": ["GPL-3.0-or-later WITH GCC-exception-3.1"],
        "libgomp-a34b3233.so.1.0.0": ["GPL-3.0-or-later WITH GCC-exception-3.1"],
        "libquadmath-96973f99.so.0.0.0": ["LGPL-2.1-or-later"],
    }
    assert components["openblas"]["version"] == "0.3.21"


def classify_licence(text: str) -> str:
    text = text[:3000]  # the package's own licence; appendices (MXNet's third-party notices) come later
    if "Permission is hereby granted, free of charge" in text:
        return "MIT"
    if "Apache License" in text and "Version 2.0" in text:
        return "Apache-2.0"
    if "Redistribution and use in source and binary forms" in text:
        return "BSD-3-Clause" if re.search(r"Neither the name|names of its\s+contributors", text) else "BSD-2-Clause"
    return "unknown"


@pytest.mark.parametrize("name", sorted(load_pins()))
def test_licence_matches_the_licence_file_in_the_pinned_source(document: dict, name: str) -> None:
    """The recipe's `license` (what the SBOM says) against the LICENSE file upstream ships."""
    pin = load_pins()[name]
    cache = SourceCache(shared_source_cache())
    mirror = cache.cached_mirror(pin)
    if mirror is None:
        pytest.skip(f"pinned source of {name} not in {shared_source_cache()}")
    with tarfile.open(cache.path(mirror.sha256)) as archive:
        members = [m for m in archive.getmembers() if m.isfile()
                   and re.fullmatch(r"[^/]+/(LICENSE|COPYING|license)(\.\w+)?", m.name)]
        assert members, f"no top-level licence file in {mirror.filename}"
        text = archive.extractfile(members[0]).read().decode(errors="replace")
    assert licence_ids(by_ref(document)[pin.reference]) == [classify_licence(text)], (
        f"{pin.reference}: recipes/{name}/conanfile.py says {licence_ids(by_ref(document)[pin.reference])}, "
        f"but {members[0].name} is {classify_licence(text)}")


def test_scopes_and_dependency_graph(document: dict) -> None:
    components = by_ref(document)
    scope = {c["name"]: (c["scope"], {p["name"]: p["value"] for p in c.get("properties", [])}.get("nntc:role"))
             for c in components.values() if "/" in c["bom-ref"]}
    for name in ("mxnet", "nnpack", "cpuinfo", "pthreadpool", "fxdiv", "fp16", "psimd"):
        assert scope[name] == ("required", "runtime"), name
    assert scope["googletest"] == ("excluded", "test-only")
    for name in ("peachpy", "six", "opcodes"):
        assert scope[name] == ("excluded", "build-time"), name
    edges = {d["ref"].split("/")[0]: {r.split("/")[0] for r in d.get("dependsOn", [])} for d in document["dependencies"]}
    assert edges["wheel"] >= {"mxnet", "bundled:libgomp-a34b3233.so.1.0.0"}
    assert edges["mxnet"] == {"nnpack", "openblas"}
    assert edges["nnpack"] == {"cpuinfo", "pthreadpool", "fxdiv", "fp16", "psimd", "googletest", "peachpy", "six"}
    assert edges["pthreadpool"] == {"fxdiv"} and edges["fp16"] == {"psimd"}
    assert edges["peachpy"] == {"opcodes", "six"}


@pytest.mark.parametrize("target", ["x86_64", "arm64"])
def test_components_agree_with_conans_own_graph(target: str, tmp_path: Path) -> None:
    """Conan evaluates the recipes (exported into a throwaway Conan home; nothing is built): its
    nodes, licences, contexts and edges must be what the SBOM derived from the recipes' source."""
    from conan.api.conan_api import ConanAPI

    from nnpack_toolchain.conan_config import HOST_GCC, settings_lines
    from nnpack_toolchain.distros import DEFAULT_BUILD, DISTRIBUTIONS

    arch = parse_target(target).conan_arch
    api = ConanAPI(str(tmp_path / "conan"))
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        for recipe in ["base", *(p.name for p in load_pins().values() if p.stage == "nnpack")]:
            api.export.export(str(RECIPES_DIR / recipe / "conanfile.py"), None, None, None, None, remotes=[])
        (tmp_path / "host").write_text("\n".join(settings_lines(arch, DISTRIBUTIONS[DEFAULT_BUILD].gcc)) + "\n")
        (tmp_path / "build").write_text("\n".join(settings_lines("x86_64", HOST_GCC)) + "\n")
        graph = api.graph.load_graph_requires([load_pins()["nnpack"].reference], None,
                                              api.profiles.get_profile([str(tmp_path / "host")]),
                                              api.profiles.get_profile([str(tmp_path / "build")]), None, [], False)
    conan = {}
    for node in graph.nodes[1:]:
        scope = "excluded" if node.test or node.context == "build" else "required"
        conan[str(node.ref)] = (node.conanfile.license, scope, {str(e.dst.ref) for e in node.edges})
    doc = build_sbom(target, wheel_path=None, nnpack_result=None, mxnet_result=None)
    ours = {}
    for component in doc["components"]:
        if "/" in component["bom-ref"] and component["name"] != "mxnet":
            deps = next(d.get("dependsOn", []) for d in doc["dependencies"] if d["ref"] == component["bom-ref"])
            ours[component["bom-ref"]] = (" AND ".join(licence_ids(component)), component["scope"], set(deps))
    assert ours == conan


def test_missing_patch_file_is_a_clear_error(tmp_path: Path) -> None:
    recipes = tmp_path / "recipes"
    shutil.copytree(RECIPES_DIR, recipes, ignore=shutil.ignore_patterns("build-*", "__pycache__"))
    conandata = recipes / "mxnet" / "conandata.yml"
    data = yaml.safe_load(conandata.read_text())
    data["patches"]["1.9.1"].append({"patch_file": "patches/0099-gone.patch", "patch_description": "lost"})
    conandata.write_text(yaml.safe_dump(data))
    with pytest.raises(SbomError, match=r"mxnet/1\.9\.1: conandata\.yml lists patch 0099-gone\.patch.*does not exist"):
        build_sbom("x86_64", wheel_path=None, nnpack_result=None, mxnet_result=None, pins=load_pins(recipes))


def test_build_that_applied_other_patches_is_refused() -> None:
    nnpack, mxnet = results()
    mxnet["patches"] = mxnet["patches"][:-1]
    with pytest.raises(SbomError, match="rebuild MXNet"):
        build_sbom("x86_64", wheel_path=None, nnpack_result=nnpack, mxnet_result=mxnet)


def test_unknown_bundled_library_is_refused() -> None:
    with pytest.raises(SbomError, match="libmystery-12345678.so.1 is not a known package"):
        build_sbom("x86_64", wheel_path=None, nnpack_result=None, mxnet_result=None,
                   bundled_libraries=[("libmystery-12345678.so.1", "0" * 64)])


def test_unverified_local_source_has_no_pinned_hash() -> None:
    nnpack, mxnet = results()
    ref = load_pins()["cpuinfo"].reference
    nnpack["sources"] = [f"{ref}: local directory /src/cpuinfo [UNVERIFIED local directory]"]
    component = by_ref(build_sbom("x86_64", wheel_path=None, nnpack_result=nnpack, mxnet_result=mxnet))[ref]
    assert "hashes" not in component
    assert {"name": "nntc:source-unverified", "value": "true"} in component["properties"]


def test_same_inputs_give_the_same_document(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1652140800")
    nnpack, mxnet = results()
    first, second = (build_sbom("x86_64", wheel_path=fake_wheel(tmp_path), nnpack_result=nnpack, mxnet_result=mxnet,
                                bundled_libraries=BUNDLED) for _ in range(2))
    assert first == second
    assert first["metadata"]["timestamp"].startswith("2022-05-10T00:00:00")


def test_a_document_written_later_for_the_same_wheel_is_the_same(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Session 20: without SOURCE_DATE_EPOCH the timestamp was the clock's, so the SBOM of an up-to-date wheel,
    written again by the wheel step, differed from the one written with the wheel (which had set it)."""
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    nnpack, mxnet = results()
    documents = []
    for now in (1.8e9, 1.9e9):
        monkeypatch.setattr(time, "time", lambda now=now: now)
        documents.append(build_sbom("x86_64", wheel_path=fake_wheel(tmp_path), nnpack_result=nnpack,
                                    mxnet_result=mxnet, bundled_libraries=BUNDLED))
    assert documents[0] == documents[1]
    assert documents[0]["metadata"]["timestamp"].startswith("2022-05-10T00:00:00")  # MXNet 1.9.1's release, the wheel's


def test_write_is_complete_and_parseable(document: dict, tmp_path: Path) -> None:
    path = write_sbom(tmp_path / "out" / "x.cdx.json", document)
    assert json.loads(path.read_text()) == document
    assert [p.name for p in path.parent.iterdir()] == ["x.cdx.json"]


def test_failed_write_leaves_old_file_and_no_partial_file(document: dict, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "x.cdx.json"
    path.write_text("previous\n")
    with pytest.raises(TypeError):
        write_sbom(path, {"bad": object()})  # not serialisable
    assert path.read_text() == "previous\n" and [p.name for p in tmp_path.iterdir()] == ["x.cdx.json"]

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", failing_replace)  # write_sbom writes through files.atomic_write_text
    with pytest.raises(OSError, match="disk full"):
        write_sbom(path, document)
    assert path.read_text() == "previous\n"
    assert [p.name for p in tmp_path.iterdir()] == ["x.cdx.json"]


def test_bundled_libraries_carry_the_exact_debian_version_of_the_package_they_came_from(tmp_path: Path) -> None:
    """Session 19: the SBOM said openblas 0.3.13 (from the library's file name), while the wheel bundles
    Debian's 0.3.13+ds-3+deb11u1 (with Debian's fixes: a scanner matches advisories against the Debian
    version, and deb11u1 carries one, an AVX512 DGEMM fix, per its changelog); and nothing said which
    package versions a wheel was made from, though two machines' wheels of the same inputs differed.
    The packages come from the sysroot's and the compilers' `.complete` lists, as apt named the files."""
    sysroot, compilers = tmp_path / "sysroot", tmp_path / "compilers"
    for root, debs in ((sysroot, ["libc6_2.31-13+deb11u11_arm64.deb", "libcrypt1_1%3a4.4.18-4_arm64.deb",
                                  "libgfortran5_10.2.1-6_arm64.deb", "libgomp1_10.2.1-6_arm64.deb",
                                  "libopenblas-pthread-dev_0.3.13+ds-3+deb11u1_arm64.deb",
                                  "libopenblas0-pthread_0.3.13+ds-3+deb11u1_arm64.deb"]),
                       (compilers, ["g++-10-aarch64-linux-gnu_10.2.1-6cross1_amd64.deb",
                                    "libc6-dev-arm64-cross_2.31-9cross4_all.deb"])):
        root.mkdir()
        (root / ".complete").write_text("\n".join(debs) + "\n")
    packages = unpacked_packages(sysroot)
    assert DebPackage("libcrypt1", "1:4.4.18-4", "arm64") in packages  # the epoch, unquoted
    assert unpacked_packages(tmp_path / "nowhere") == []
    nnpack, mxnet = results("arm64")
    bundled = [("libopenblasp-r0-bf698de3.3.13.so", "a" * 64), ("libgfortran-3f9e4f43.so.5.0.0", "b" * 64),
               ("libgomp-d199903e.so.1.0.0", "c" * 64)]
    doc = build_sbom("arm64", wheel_path=None, nnpack_result=nnpack, mxnet_result=mxnet, bundled_libraries=bundled,
                     sysroot_packages=packages, compiler_packages=unpacked_packages(compilers))
    components = by_ref(doc)
    assert components["openblas"]["version"] == "0.3.13+ds-3+deb11u1"
    assert components["openblas"]["purl"] == \
        "pkg:deb/debian/libopenblas0-pthread@0.3.13%2Bds-3%2Bdeb11u1?arch=arm64&distro=bullseye"
    openblas_file = components["bundled:libopenblasp-r0-bf698de3.3.13.so"]  # the file: the version, not the purl
    assert openblas_file["version"] == "0.3.13+ds-3+deb11u1" and "purl" not in openblas_file
    gfortran = components["bundled:libgfortran-3f9e4f43.so.5.0.0"]
    assert gfortran["version"] == "10.2.1-6" and gfortran["purl"].startswith("pkg:deb/debian/libgfortran5@10.2.1-6")
    assert components["bundled:libgomp-d199903e.so.1.0.0"]["version"] == "10.2.1-6"
    properties = {p["name"]: p["value"] for p in doc["properties"]}
    assert properties["nntc:sysroot-packages"].split()[:2] == ["libc6=2.31-13+deb11u11", "libcrypt1=1:4.4.18-4"]
    assert properties["nntc:compiler-packages"] == \
        "g++-10-aarch64-linux-gnu=10.2.1-6cross1 libc6-dev-arm64-cross=2.31-9cross4"
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(doc)) is None
    (sysroot / ".complete").write_text("libc6.deb\n")
    with pytest.raises(SourceError, match=r"'libc6\.deb' is not a \.deb file name .*delete .*sysroot and rerun"):
        unpacked_packages(sysroot)
