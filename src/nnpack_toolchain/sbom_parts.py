"""What goes into each wheel's SBOM, read from the project's own declarations: the components
(`Part`: version, licences, hashes, references, patches, scope, edges) that sbom.py turns into
a CycloneDX document.

Where the data comes from (each fact lives in one place):

- versions, upstream commits, archives and their sha256, patch files and their descriptions:
  the recipes' `conandata.yml` through `sources.load_pins()`;
- licence, homepage, description and the dependency edges (`self.requires` / `tool_requires` /
  `test_requires`): the recipes' `conanfile.py`, read with `ast` (no Conan import, no Conan
  home, nothing executed). MXNet has no Conan recipe (it is the project's own stage): its
  licence is in `NON_RECIPE_LICENCES` below, as are those of the target libraries taken from
  Debian (OpenBLAS, the GCC runtime) that MXNet links and auditwheel may graft into the wheel;
- what was really built: the NNPACK and MXNet stage results (backend, library hashes, which
  sources were verified, which patches were applied), cross-checked against the pins.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import yaml

from .errors import ToolchainError
from .settings import PROJECT_ROOT
from .sources import GITHUB_ARCHIVE, Mirror, Pin
from .sysroot import DebPackage
from .targets import parse_target

OPENBLAS_REF = "openblas"

NON_RECIPE_LICENCES = {"mxnet": "Apache-2.0"}
"""Licences of pinned packages built without a Conan recipe (no conanfile.py to read)."""

GCC_RUNTIME = "GPL-3.0-or-later WITH GCC-exception-3.1"
BUNDLED_LIBRARY_KINDS: tuple[tuple[str, str, str], ...] = (
    # (pattern on the library's base name without "lib" and auditwheel's hash, origin, licence)
    (r"openblas.*|c?blas|lapacke?", OPENBLAS_REF, "BSD-3-Clause"),
    (r"gomp|gfortran|gcc_s|stdc\+\+|atomic", "gcc", GCC_RUNTIME),
    (r"quadmath", "gcc", "LGPL-2.1-or-later"),
)
"""Target libraries that are not pinned packages, by the name auditwheel gives them."""
BUNDLED_DEBIAN_PACKAGES: tuple[tuple[str, str], ...] = (
    # (pattern on the library's base name as above, pattern on the Debian binary package that ships it)
    (r"openblas.*", r"libopenblas0(-\w+)?"),
    (r"gfortran", r"libgfortran\d+"),
    (r"gomp", r"libgomp\d+"),
    (r"quadmath", r"libquadmath\d+"),
    (r"gcc_s", r"libgcc-s\d+"),
    (r"stdc\+\+", r"libstdc\+\+\d+"),
    (r"atomic", r"libatomic\d+"),
)
"""Which of the target sysroot's packages a bundled library came from (its version is the library's)."""


class SbomError(ToolchainError):
    """The SBOM cannot be made complete and truthful (missing patch, unknown library, mismatch)."""

    exit_code = 8


# -- What the recipes declare ----------------------------------------------------------------------
@dataclass(frozen=True)
class RecipeInfo:
    license: tuple[str, ...] = ()
    homepage: str | None = None
    description: str | None = None
    requires: tuple[str, ...] = ()
    tool_requires: tuple[str, ...] = ()
    test_requires: tuple[str, ...] = ()


_CALL_KINDS = {"requires": "requires", "tool_requires": "tool_requires", "build_requires": "tool_requires",
               "test_requires": "test_requires"}


def _strings(node: ast.AST) -> tuple[str, ...]:
    value = ast.literal_eval(node)
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError(f"not a string or a list of strings: {value!r}")


def read_recipe(conanfile: Path) -> RecipeInfo:
    """Licence, homepage, description and requirements of a conanfile.py, read without running it.

    Requirements are every `self.requires("name/version")`-style call with a literal reference,
    whatever condition surrounds it; which of them apply is decided by the pins of the backend.
    """
    tree = ast.parse(conanfile.read_text(), filename=str(conanfile))
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef)
               and any(isinstance(b, ast.Name) and b.id == "ConanFile" for b in n.bases)]
    if len(classes) != 1:
        raise SbomError(f"{conanfile}: expected one ConanFile class, found {len(classes)}")
    attrs: dict[str, tuple[str, ...]] = {}
    found: dict[str, list[str]] = {"requires": [], "tool_requires": [], "test_requires": []}
    for stmt in classes[0].body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            name = stmt.targets[0].id
            if name in ("license", "homepage", "description", *_CALL_KINDS):
                try:
                    attrs[name] = _strings(stmt.value)
                except ValueError as exc:
                    raise SbomError(f"{conanfile}: attribute {name}: {exc}") from None
    for node in ast.walk(classes[0]):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "self"
                and node.func.attr in _CALL_KINDS and node.args
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found[_CALL_KINDS[node.func.attr]].append(node.args[0].value)
    for name, kind in _CALL_KINDS.items():
        found[kind].extend(attrs.get(name, ()))
    return RecipeInfo(
        license=attrs.get("license", ()),
        homepage=(attrs.get("homepage") or (None,))[0],
        description=(attrs.get("description") or (None,))[0],
        requires=tuple(dict.fromkeys(found["requires"])),
        tool_requires=tuple(dict.fromkeys(found["tool_requires"])),
        test_requires=tuple(dict.fromkeys(found["test_requires"])),
    )


def recipe_info(pin: Pin) -> RecipeInfo:
    conanfile = pin.recipe_dir / "conanfile.py"
    if conanfile.is_file():
        info = read_recipe(conanfile)
        if not info.license:
            raise SbomError(f"{conanfile} has no license attribute: the SBOM needs every component's licence")
        return info
    if pin.name in NON_RECIPE_LICENCES:
        return RecipeInfo(license=(NON_RECIPE_LICENCES[pin.name],))
    raise SbomError(f"{pin.reference}: no conanfile.py in {pin.recipe_dir} and no entry in "
                    "sbom_parts.NON_RECIPE_LICENCES: its licence is unknown")


def patch_types(pin: Pin) -> dict[str, str]:
    """patch file name -> conandata.yml's patch_type (load_pins() does not keep it)."""
    data = yaml.safe_load((pin.recipe_dir / "conandata.yml").read_text())
    entries = (data.get("patches") or {}).get(pin.version) or []
    return {Path(e["patch_file"]).name: str(e.get("patch_type", "")) for e in entries}


# -- The component model, before it becomes CycloneDX ----------------------------------------------
@dataclass
class Part:
    ref: str
    name: str
    version: str | None
    licences: tuple[str, ...]
    scope: str = "required"
    kind: str = "library"
    description: str | None = None
    purl: str | None = None
    sha256: str | None = None
    references: list[tuple[str, str, str | None, str]] = field(default_factory=list)
    """(type, url, sha256 or None, comment)"""
    patches: list[tuple[str, str, str, str]] = field(default_factory=list)
    """(repo-relative path, diff text, description, conandata patch_type)"""
    properties: dict[str, str] = field(default_factory=dict)
    depends_on: list[str] = field(default_factory=list)


def debian_pool_url(source: str, filename: str) -> str:
    prefix = source[:4] if source.startswith("lib") else source[0]
    return f"https://deb.debian.org/debian/pool/main/{prefix}/{source}/{filename}"


def pypi_sdist_url(project: str, filename: str) -> str:
    return f"https://files.pythonhosted.org/packages/source/{project[0]}/{project}/{filename}"


def mirror_reference(mirror: Mirror) -> tuple[str, str, str | None, str]:
    if mirror.url:
        return ("distribution", mirror.url, mirror.sha256, f"pinned archive {mirror.filename}")
    if mirror.debian:
        return ("distribution", debian_pool_url(mirror.debian[0], mirror.filename), mirror.sha256,
                f"Debian source package {mirror.debian[0]} {mirror.debian[1]}: {mirror.filename} (same tree)")
    assert mirror.pypi
    return ("distribution", pypi_sdist_url(mirror.pypi[0], mirror.filename), mirror.sha256,
            f"PyPI sdist {mirror.pypi[0]}=={mirror.pypi[1]}")


def pin_purl(pin: Pin) -> str:
    from packageurl import PackageURL

    first = pin.mirrors[0]
    match = GITHUB_ARCHIVE.match(first.url or "")
    github = urlparse(first.url or "")
    if pin.commit and github.netloc == "github.com":
        owner, repo = match.groups()[:2] if match else github.path.strip("/").split("/")[:2]
        return PackageURL(type="github", namespace=owner, name=repo, version=pin.commit).to_string()
    if first.pypi:
        return PackageURL(type="pypi", name=first.pypi[0].lower(), version=first.pypi[1]).to_string()
    name = first.filename.split(f"-{pin.version}")[0] if f"-{pin.version}" in first.filename else pin.name
    qualifiers = {"checksum": f"sha256:{first.sha256}"}
    if first.url:
        qualifiers["download_url"] = first.url
    return PackageURL(type="generic", name=name, version=pin.version, qualifiers=qualifiers).to_string()


def read_patches(pin: Pin) -> list[tuple[str, str, str, str]]:
    types = patch_types(pin)
    result = []
    for patch in pin.patches:
        if not patch.file.is_file():
            raise SbomError(f"{pin.reference}: conandata.yml lists patch {patch.file.name}, but "
                            f"{patch.file} does not exist; the SBOM cannot describe a patch it cannot read")
        try:
            rel = patch.file.resolve().relative_to(PROJECT_ROOT).as_posix()
        except ValueError:
            rel = patch.file.as_posix()
        result.append((rel, patch.file.read_text(encoding="utf-8"), patch.description,
                       types.get(patch.file.name, "")))
    return result


def pin_part(pin: Pin, info: RecipeInfo, *, scope: str, source_line: str | None) -> Part:
    part = Part(
        ref=pin.reference, name=pin.name, version=pin.version, licences=info.license, scope=scope,
        description=info.description, purl=pin_purl(pin), sha256=pin.mirrors[0].sha256,
        references=[mirror_reference(m) for m in pin.mirrors], patches=read_patches(pin),
        properties={"nntc:recipe": f"recipes/{pin.recipe_dir.name}", "nntc:stage": pin.stage},
    )
    if info.homepage:
        part.references.insert(0, ("website", info.homepage, None, "homepage"))
    if pin.commit:
        part.properties["nntc:upstream-commit"] = pin.commit
    if source_line:
        part.properties["nntc:source"] = source_line
        if "UNVERIFIED" in source_line:
            # Built from a local directory: the pinned archive's hash does not describe it.
            part.sha256 = None
            part.properties["nntc:source-unverified"] = "true"
    return part


# -- Every component, with its scope and edges -----------------------------------------------------
def _source_lines(nnpack_result: Mapping | None, mxnet_result: Mapping | None) -> dict[str, str]:
    lines: dict[str, str] = {}
    for line in (nnpack_result or {}).get("sources", []):
        lines[line.split(":", 1)[0]] = line
    if mxnet_result and mxnet_result.get("source"):
        lines["mxnet"] = mxnet_result["source"]
    return lines


def _library_stem(soname: str) -> str:
    """libopenblasp-r0-bf698de3.3.13.so -> openblasp-r0: the base name without "lib" and auditwheel's hash."""
    return re.sub(r"-[0-9a-f]{8}$", "", soname.split(".", 1)[0]).removeprefix("lib")


def _debian_package(stem: str, packages: Sequence[DebPackage]) -> DebPackage | None:
    for library, package in BUNDLED_DEBIAN_PACKAGES:
        if re.fullmatch(library, stem):
            return next((p for p in packages if re.fullmatch(package, p.name)), None)
    return None


def _from_debian(part: Part, deb: DebPackage | None, suite: str, purl: bool = True) -> Part:
    """The part's version and purl from the Debian package it came from: the exact Debian version
    (0.3.13+ds-3+deb11u1, not the upstream 0.3.13 of the file name), which Debian's fixes and a
    scanner's advisories are stated against. purl=False: the package has a component of its own
    (OpenBLAS), which alone carries its purl (scanners key components by purl)."""
    if deb is not None:
        part.version = deb.version
        part.properties["nntc:debian-package"] = f"{deb.name} {deb.version} {deb.arch}"
        if purl:
            part.purl = deb.purl(suite)
    return part


def _bundled_part(soname: str, sha256: str, pins_by_name: Mapping[str, Part],
                  packages: Sequence[DebPackage] = (), suite: str = "") -> Part:
    stem = _library_stem(soname)
    origin = licence = None
    if stem in pins_by_name:
        origin, licence = stem, pins_by_name[stem].licences
    else:
        for pattern, kind_origin, kind_licence in BUNDLED_LIBRARY_KINDS:
            if re.fullmatch(pattern, stem):
                origin, licence = kind_origin, (kind_licence,)
                break
    if origin is None or not licence:
        raise SbomError(f"bundled library {soname} is not a known package; add it to "
                        "sbom_parts.BUNDLED_LIBRARY_KINDS with its origin and licence")
    if not re.fullmatch(r"[0-9a-f]{64}", sha256 or ""):
        raise SbomError(f"bundled library {soname}: {sha256!r} is not a sha256")
    part = Part(ref=f"bundled:{soname}", name=soname, version=None, licences=licence, kind="file",
                sha256=sha256, description=f"shared library bundled into the wheel (from {origin})",
                properties={"nntc:bundled-from": origin})
    return _from_debian(part, _debian_package(stem, packages), suite, purl=origin != OPENBLAS_REF)


def _openblas_part(target_name: str, bundled: Iterable[tuple[str, str]], suite: str,
                   packages: Sequence[DebPackage] = ()) -> Part:
    target = parse_target(target_name)
    version = None
    for soname, _ in bundled:
        match = re.match(r"libopenblas\w*-r(\d+)(?:-[0-9a-f]{8})?\.(\d+(?:\.\d+)*)\.so", soname)
        if match:
            version = f"{match.group(1)}.{match.group(2)}"
    purl = DebPackage("openblas", version or "", target.debian_arch).purl(suite)  # the sysroot's own, when found: _from_debian
    part = Part(ref=OPENBLAS_REF, name="openblas", version=version, licences=("BSD-3-Clause",), purl=purl,
                description=f"OpenBLAS (pthread variant) from Debian {suite} {target.debian_arch}, "
                            "linked by MXNet",
                references=[("website", "https://www.openblas.net/", None, "homepage")],
                properties={"nntc:stage": "sysroot"})
    return _from_debian(part, _debian_package("openblas", packages), suite)


def collect_parts(target_name: str, *, backend: str, nnpack_result: Mapping | None,
                  mxnet_result: Mapping | None, bundled_libraries: Iterable[tuple[str, str]],
                  pins: Mapping[str, Pin], suite: str, sysroot_packages: Sequence[DebPackage] = ()) -> list[Part]:
    """Every component with its scope and edges; the wheel's direct dependencies come first.
    sysroot_packages: the target sysroot's packages, which auditwheel took the bundled libraries from."""
    used = [p for p in pins.values() if p.stage == "mxnet" or p.only_for_backend in (None, backend)]
    by_name = {p.name: p for p in used}
    if "mxnet" not in by_name or "nnpack" not in by_name:
        raise SbomError("the pins must include mxnet and nnpack")
    infos = {p.name: recipe_info(p) for p in used}

    # Edges from the recipes; a requirement must name a used pin at its pinned version.
    edges: dict[str, list[tuple[str, str]]] = {}
    for name, info in infos.items():
        for kind, refs in (("requires", info.requires), ("tool", info.tool_requires), ("test", info.test_requires)):
            for ref in refs:
                dep, _, version = ref.partition("/")
                if dep not in by_name:
                    if pins.get(dep) is not None:
                        continue  # another backend's requirement
                    raise SbomError(f"recipe {name} requires {ref}, which has no pin in recipes/")
                if version != by_name[dep].version:
                    raise SbomError(f"recipe {name} requires {ref}, but {dep} is pinned at {by_name[dep].version}")
                edges.setdefault(name, []).append((dep, kind))
    edges.setdefault("mxnet", []).insert(0, ("nnpack", "requires"))

    # Scope: required when reachable from MXNet through runtime requirements only.
    required, todo = {"mxnet"}, ["mxnet"]
    while todo:
        for dep, kind in edges.get(todo.pop(), []):
            if kind == "requires" and dep not in required:
                required.add(dep)
                todo.append(dep)
    role = {}
    for name in by_name:
        if name not in required:
            kinds = {k for deps in edges.values() for d, k in deps if d == name}
            role[name] = "test-only" if kinds == {"test"} else "build-time"

    sources = _source_lines(nnpack_result, mxnet_result)
    parts: dict[str, Part] = {}
    for pin in sorted(used, key=lambda p: (p.name != "mxnet", p.name != "nnpack", p.name)):
        part = pin_part(pin, infos[pin.name], scope="required" if pin.name in required else "excluded",
                        source_line=sources.get(pin.reference))
        part.properties["nntc:role"] = "runtime" if pin.name in required else role[pin.name]
        part.depends_on = [by_name[d].reference for d, _ in edges.get(pin.name, [])]
        parts[pin.name] = part

    if mxnet_result is not None:
        applied = list(mxnet_result.get("patches", []))
        listed = [p.file.name for p in by_name["mxnet"].patches]
        if applied != listed:
            raise SbomError(f"the MXNet build applied patches {applied}, but recipes/mxnet/conandata.yml lists "
                            f"{listed}: rebuild MXNet before writing its SBOM")
    if nnpack_result is not None and nnpack_result.get("reference") not in (None, by_name["nnpack"].reference):
        raise SbomError(f"the NNPACK build is {nnpack_result['reference']}, but the pin is "
                        f"{by_name['nnpack'].reference}: rebuild NNPACK before writing the SBOM")

    bundled = list(bundled_libraries)
    openblas = _openblas_part(target_name, bundled, suite, sysroot_packages)
    parts["mxnet"].depends_on.append(OPENBLAS_REF)
    extra = [openblas]
    seen: set[str] = set()
    for soname, sha in bundled:
        if soname in seen:
            raise SbomError(f"bundled library {soname} is listed twice")
        seen.add(soname)
        extra.append(_bundled_part(soname, sha, parts, sysroot_packages, suite))
    return [*parts.values(), *extra]
