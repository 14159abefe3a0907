"""A CycloneDX 1.6 SBOM for each wheel: NNPACK, its dependencies, MXNet, OpenBLAS, the libraries
bundled into the wheel, their versions, licences and the patches applied.

The components, and where each fact in them comes from (the pins, the recipes read with `ast`,
the stage results): sbom_parts.py. This module makes the document from them.

Why not Conan's own SBOM support (`conan.tools.sbom.cyclonedx_1_6`)? It is experimental, needs a
conanfile with a loaded dependency graph (`conanfile.subgraph`, i.e. a hook or a custom command
run against a Conan home with every recipe exported), and produces only what a Conan graph
knows: name, version, `pkg:conan/...` purls (which point at ConanCenter, where these recipes do
not come from), licence, homepage and edges. It has no archive hashes, no scopes (build and test
requirements are either dropped or listed like runtime ones), no pedigree or patches, and knows
nothing of MXNet, OpenBLAS or the grafted libraries; all of that would have to be merged in from
the pins anyway, and a Conan home would have to be in the right state just to write a JSON
file. Everything its graph contributes is in the recipes' source, so the SBOM is built from the
pins and the recipes directly. tests/test_sbom.py loads the real Conan graph (recipes exported
into a temporary Conan home, nothing built, under a second) and checks that the components,
versions, licences, scopes and edges derived in sbom_parts.py agree with what Conan evaluates.

The document is built and serialised with cyclonedx-python-lib and validated against the
CycloneDX 1.6 JSON schema before it is returned: an invalid SBOM is never written.
"""

from __future__ import annotations

import json
import re
import uuid
import warnings
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

from .files import atomic_write_text
from .sources import Pin, load_pins, sha256_of
from .distros import DEFAULT_BUILD, DISTRIBUTIONS, Distribution
from .sysroot import DebPackage
from .targets import parse_target
from .wheel import source_date_epoch
from .sbom_parts import NON_RECIPE_LICENCES, Part, SbomError, collect_parts

SPEC_VERSION = "1.6"
WHEEL_REF = "wheel"

PATCH_TYPES = {"backport": "backport", "cherry-pick": "cherry-pick"}
"""conandata.yml patch_type -> CycloneDX patch type; anything else is "unofficial"."""
ISSUE_TYPES = {"vulnerability": "security", "bugfix": "defect"}
"""conandata.yml patch_type -> CycloneDX issue type of what the patch resolves (else enhancement)."""


# -- The whole document ------------------------------------------------------------------------------
def _timestamp() -> datetime:
    """The wheel's time (SOURCE_DATE_EPOCH, else MXNet 1.9.1's release day, as its zip entries), not the
    clock: an up-to-date wheel's SBOM, written again, is the same bytes."""
    return datetime.fromtimestamp(source_date_epoch(), tz=timezone.utc)


def _toolchain_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nnpack-toolchain")
    except PackageNotFoundError:
        return "0+unknown"


def _licences(values: Iterable[str]):
    from cyclonedx.model.license import DisjunctiveLicense, LicenseExpression

    values = list(values)
    if any(re.search(r"\s(WITH|AND|OR)\s", v) for v in values):
        # CycloneDX allows exactly one expression, not mixed with ids.
        return [LicenseExpression(" AND ".join(f"({v})" if len(values) > 1 else v for v in values))]
    return [DisjunctiveLicense(id=v) for v in values]


def _component(part: Part):
    from cyclonedx.model import (
        AttachedText,
        ExternalReference,
        ExternalReferenceType,
        HashAlgorithm,
        HashType,
        Property,
        XsUri,
    )
    from cyclonedx.model.component import (
        Component,
        ComponentScope,
        ComponentType,
        Diff,
        Patch,
        PatchClassification,
        Pedigree,
    )
    from cyclonedx.model.issue import IssueClassification, IssueType
    from packageurl import PackageURL

    def sha(value: str | None) -> list:
        return [HashType(alg=HashAlgorithm.SHA_256, content=value)] if value else []

    patches = [
        Patch(type=PatchClassification(PATCH_TYPES.get(ptype, "unofficial")),
              diff=Diff(text=AttachedText(content=text, content_type="text/x-diff"), url=XsUri(path)),
              resolves=[IssueType(type=IssueClassification(ISSUE_TYPES.get(ptype, "enhancement")),
                                  id=Path(path).name, name=Path(path).name, description=description or None)])
        for path, text, description, ptype in part.patches
    ]
    pedigree = None
    if patches:
        notes = "Patches applied by nnpack-toolchain, in order:\n" + "\n".join(
            f"- {Path(path).name}: {description}" for path, _, description, _ in part.patches)
        pedigree = Pedigree(patches=patches, notes=notes)
    return Component(
        bom_ref=part.ref, name=part.name, version=part.version,
        type=ComponentType.FILE if part.kind == "file" else ComponentType.LIBRARY,
        scope=ComponentScope(part.scope), description=part.description,
        purl=PackageURL.from_string(part.purl) if part.purl else None,
        hashes=sha(part.sha256), licenses=_licences(part.licences),
        external_references=[
            ExternalReference(type=ExternalReferenceType(kind), url=XsUri(url), hashes=sha(digest), comment=comment)
            for kind, url, digest, comment in part.references],
        properties=[Property(name=k, value=v) for k, v in part.properties.items()],
        pedigree=pedigree,
    )


def _wheel_component(target_name: str, backend: str, wheel_path: Path | None, mxnet_pin: Pin,
                     nnpack_result: Mapping | None, mxnet_result: Mapping | None):
    from cyclonedx.model import HashAlgorithm, HashType, Property
    from cyclonedx.model.component import Component, ComponentType
    from packaging.utils import InvalidWheelFilename, parse_wheel_filename

    name, version, hashes = "mxnet", mxnet_pin.version, []
    properties = {"nntc:target": target_name, "nntc:nnpack-backend": backend}
    if wheel_path is not None:
        wheel_path = Path(wheel_path)
        try:
            dist, parsed, _build, _tags = parse_wheel_filename(wheel_path.name)
        except InvalidWheelFilename as exc:
            raise SbomError(f"{wheel_path.name} is not a wheel file name: {exc}") from None
        if not wheel_path.is_file():
            raise SbomError(f"wheel {wheel_path} does not exist: build it before its SBOM")
        name, version = str(dist), str(parsed)
        hashes = [HashType(alg=HashAlgorithm.SHA_256, content=sha256_of(wheel_path))]
        properties["nntc:wheel-file"] = wheel_path.name
    if nnpack_result:
        properties["nntc:libnnpack-sha256"] = str(nnpack_result.get("library_sha256", ""))
        tests = nnpack_result.get("tests") or {}
        if tests:
            properties["nntc:nnpack-tests"] = f"{tests.get('passed', 0)}/{tests.get('ran', 0)} passed"
    if mxnet_result:
        properties["nntc:libmxnet-sha256"] = str(mxnet_result.get("library_sha256", ""))
    return Component(
        bom_ref=WHEEL_REF, name=name, version=version, type=ComponentType.LIBRARY, hashes=hashes,
        description=f"MXNet {mxnet_pin.version} with NNPACK ({backend} backend) for {target_name}",
        licenses=_licences((NON_RECIPE_LICENCES["mxnet"],)),
        properties=[Property(name=k, value=v) for k, v in properties.items() if v],
    )


def build_sbom(target_name: str, *, wheel_path: Path | None, nnpack_result: dict | None,
               mxnet_result: dict | None, bundled_libraries: Iterable[tuple[str, str]] = (),
               pins: Mapping[str, Pin] | None = None,
               distribution: Distribution = DISTRIBUTIONS[DEFAULT_BUILD],
               sysroot_packages: Sequence[DebPackage] = (), compiler_packages: Sequence[DebPackage] = ()) -> dict:
    """The CycloneDX 1.6 document (as JSON data) describing the wheel of target_name.

    wheel_path: the finished wheel (its name gives the version, its bytes the hash); None before
    the wheel exists. nnpack_result / mxnet_result: the stages' result records (asdict of
    NnpackResult / MxnetResult), for the backend, what was verified and what was applied.
    bundled_libraries: (file name, sha256) of each library in the wheel besides libmxnet.so
    (auditwheel's grafts, libnnpack.so if copied in). pins: load_pins() unless given (tests).
    distribution: the base distribution whose compilers and libraries built it.
    sysroot_packages / compiler_packages: the Debian packages (sysroot.unpacked_packages) of the target
    sysroot the wheel's libraries were linked against and bundled from, and of the compilers: the
    bundled libraries get their package's exact version and purl, and both lists are properties
    (`nntc:sysroot-packages`, `nntc:compiler-packages`), so two wheels' inputs can be compared.
    """
    from cyclonedx.model import Property
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.output.json import JsonV1Dot6
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    target = parse_target(target_name)
    pins = load_pins() if pins is None else pins
    backend = (nnpack_result or {}).get("backend") or target.nnpack_backend
    if nnpack_result and nnpack_result.get("target") not in (None, target.name):
        raise SbomError(f"NNPACK result is for {nnpack_result['target']}, not {target.name}")
    if mxnet_result and mxnet_result.get("target") not in (None, target.name):
        raise SbomError(f"MXNet result is for {mxnet_result['target']}, not {target.name}")
    parts = collect_parts(target.name, backend=backend, nnpack_result=nnpack_result, mxnet_result=mxnet_result,
                          bundled_libraries=bundled_libraries, pins=pins, suite=distribution.suite,
                          sysroot_packages=sysroot_packages)

    wheel = _wheel_component(target.name, backend, wheel_path, pins["mxnet"], nnpack_result, mxnet_result)
    components = {part.ref: _component(part) for part in parts}
    bom = Bom(components=components.values(),
              properties=[Property(name="nntc:spec", value=f"CycloneDX {SPEC_VERSION}"),
                          Property(name="nntc:base-distribution",
                                   value=f"Debian {distribution.suite} ({distribution.name}), GCC {distribution.gcc}, "
                                         f"glibc {distribution.glibc}, {distribution.manylinux}"),
                          *(Property(name=f"nntc:{kind}-packages",
                                     value=" ".join(f"{p.name}={p.version}" for p in sorted(packages, key=lambda p: p.name)))
                            for kind, packages in (("sysroot", sysroot_packages), ("compiler", compiler_packages))
                            if packages)])
    bom.metadata.component = wheel
    bom.metadata.timestamp = _timestamp().replace(microsecond=0)
    bom.metadata.tools.components.add(Component(type=ComponentType.APPLICATION, name="nnpack-toolchain",
                                                version=_toolchain_version()))
    seed = "|".join([target.name, str(wheel.version), *(h.content for h in wheel.hashes),
                     *(f"{p.ref}={p.sha256}" for p in parts)])
    bom.serial_number = uuid.uuid5(uuid.NAMESPACE_URL, f"urn:nnpack-toolchain:sbom:{seed}")
    mxnet_ref = pins["mxnet"].reference
    bom.register_dependency(wheel, [components[mxnet_ref],
                                    *(c for ref, c in components.items() if ref.startswith("bundled:"))])
    for part in parts:
        bom.register_dependency(components[part.ref], [components[d] for d in part.depends_on])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the library warns about things validation below decides
        text = JsonV1Dot6(bom).output_as_string(indent=2)
    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    if error is not None:
        raise SbomError(f"the generated SBOM is not valid CycloneDX {SPEC_VERSION}: "
                        f"{getattr(error.data, 'message', error)}")
    return json.loads(text)


def sbom_path(wheel_path: Path) -> Path:
    """Where a wheel's SBOM goes: next to it, <wheel name without .whl>.cdx.json."""
    return Path(wheel_path).with_suffix(".cdx.json")


def write_sbom(path: Path, document: Mapping) -> Path:
    """Write document as JSON atomically (files.atomic_write_text): the previous file or the whole new one."""
    text = json.dumps(document, indent=2, sort_keys=False) + "\n"  # fails before anything is written
    return atomic_write_text(path, text)
