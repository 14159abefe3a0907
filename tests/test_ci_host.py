"""CI runs where everything was built and tested: one Debian 12 image in both CI files; the Python
packages pinned to the versions that were tested."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import PackageNotFoundError, version

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import REPO

CONSTRAINTS = REPO / "ci" / "constraints.txt"


def github_images() -> dict[str, str | None]:
    jobs = yaml.safe_load((REPO / "ci" / "github-actions.yml").read_text())["jobs"]
    return {name: (job.get("container") or {}).get("image") if isinstance(job.get("container"), dict)
            else job.get("container") for name, job in jobs.items()}


def gitlab_images() -> dict[str, str]:
    data = yaml.safe_load((REPO / "ci" / "gitlab-ci.yml").read_text())
    default = data["default"]["image"]
    return {name: job.get("image", default) for name, job in data.items()
            if isinstance(job, dict) and "script" in job}


def test_every_ci_job_runs_in_one_debian_12_image() -> None:
    images = set(github_images().values()) | set(gitlab_images().values())
    assert None not in images, f"a GitHub job runs on the runner's own OS: {github_images()}"
    assert len(images) == 1, f"the CI files name different hosts: {images}"
    image = images.pop()
    assert re.search(r"(^debian:(12|bookworm)\b)|(-bookworm$)", image), f"{image} is not Debian 12 (bookworm)"


def test_the_ci_image_is_the_build_host_release() -> None:
    """The build profile's GCC (tools run during a build) is the CI image's own: Debian 12's GCC 12.
    Target code is built with the base distribution's compilers, whatever the host."""
    from nnpack_toolchain.conan_config import HOST_GCC
    from nnpack_toolchain.distros import DISTRIBUTIONS

    image = next(iter(gitlab_images().values()))
    host = DISTRIBUTIONS["debian12"]
    assert host.suite in image and HOST_GCC == host.gcc


def pins() -> dict[str, str]:
    result = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, sep, pinned = line.partition("==")
            assert sep and pinned, f"{CONSTRAINTS.name}: {line!r} is not an exact pin"
            result[canonicalize_name(name)] = pinned
    return result


def requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    return [Requirement(r) for r in names]


def test_every_dependency_is_pinned_within_the_range_the_code_supports() -> None:
    pinned = pins()
    for requirement in requirements():
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{requirement.name} is not pinned in {CONSTRAINTS}"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"{CONSTRAINTS.name} pins {name}=={pinned[name]} outside pyproject's {requirement}")


def test_the_suite_runs_with_the_pinned_versions() -> None:
    """ci/bootstrap.sh installs with the constraints: what runs here is what the pins say."""
    wrong = []
    for name, pinned in pins().items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            wrong.append(f"{name} not installed")
            continue
        if canonicalize_name(installed) != canonicalize_name(pinned) and installed != pinned:
            wrong.append(f"{name} {installed} (pinned {pinned})")
    assert not wrong, ("installed versions differ from ci/constraints.txt; run "
                       "pip install -c ci/constraints.txt -e '.[test]': " + ", ".join(wrong))


def test_bootstrap_installs_with_the_constraints() -> None:
    text = (REPO / "ci" / "bootstrap.sh").read_text()
    assert re.search(r"pip install[^\n]*-c[ =]?\"?[^\n]*constraints\.txt", text), "bootstrap.sh ignores the pins"
