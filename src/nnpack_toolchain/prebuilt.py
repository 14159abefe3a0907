"""MXNet builds from the team's Conan remote: one machine builds, the others download.

The MXNet stage's result (libmxnet.so and MXNet's patched Python package) and the wheel stage's
(the wheel and its SBOM) become one binary-only Conan package, `mxnet-nnpack/1.9.1`
(recipes/mxnet-prebuilt), whose options are the digests `mxnet.package_inputs` computes: source,
patches, config.mk (home path replaced), NNPACK's library, toolchain. So the package id is the
build's identity on every machine.

- `publish_prebuilt` (`invoke publish`): `conan export-pkg` of the staged results, then upload.
- `use_prebuilt` (the MXNet step of `invoke build`, before make): unless the home already holds
  this build, `conan install --build=never` from the configured remotes and deploy it under
  `out/<target>/prebuilt`, with the wheel in `out/<target>/wheel`; the wheel step then finds it up
  to date and the smoke suite tests it. No package with these inputs: one line naming the input
  that differs from the nearest package on the remote, then make as usual.
  `--prebuilt`: `auto` (default: download when a remote has it, else build), `require` (fail
  instead of building), `never` (always build here).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

from . import conan_config, log
from .configure import ConfigureResult
from .errors import BuildError, ConfigurationError, ToolchainError
from .files import atomic_write_text
from .mxnet import RESULT_FILE, MxnetResult
from .mxnet import current_package_inputs as current_inputs
from .runner import run
from .settings import RECIPES_DIR, Settings
from .sources import sha256_of
from .targets import Target
from .wheel import RESULT_FILE as WHEEL_RESULT_FILE
from .mxnet_wheel import current_mxnet_wheel_digest
from .wheel import WheelResult

REFERENCE = "mxnet-nnpack/1.9.1"
RECIPE = RECIPES_DIR / "mxnet-prebuilt"


class PrebuiltError(ToolchainError):
    """--prebuilt require and no package could be downloaded."""

    exit_code = 10


def option_args(inputs: dict[str, str]) -> list[str]:
    return [arg for name, value in sorted(inputs.items()) for arg in ("-o", f"{REFERENCE.split('/')[0]}/*:{name}={value}")]


# -- publishing -------------------------------------------------------------------------------------

def stage(target: Target, settings: Settings, into: Path) -> None:
    """Copy the target's MXNet and wheel results into `into`, paths relative to the package."""
    out = settings.output_dir(target.name)
    mxnet = MxnetResult(**json.loads((out / RESULT_FILE).read_text()))
    wheel = WheelResult(**json.loads((out / WHEEL_RESULT_FILE).read_text()))
    library = Path(mxnet.library)
    (into / "lib").mkdir(parents=True)
    shutil.copyfile(library, into / "lib" / "libmxnet.so")
    shutil.copytree(library.parent.parent / "python" / "mxnet", into / "python" / "mxnet",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.so"))
    (into / "wheel").mkdir()
    for path in (Path(wheel.wheel), Path(wheel.sbom)):
        shutil.copyfile(path, into / "wheel" / path.name)
    mxnet.library, mxnet.up_to_date = "lib/libmxnet.so", False
    wheel.wheel, wheel.sbom, wheel.up_to_date = f"wheel/{Path(wheel.wheel).name}", f"wheel/{Path(wheel.sbom).name}", False
    (into / RESULT_FILE).write_text(json.dumps(asdict(mxnet), indent=2) + "\n")
    (into / WHEEL_RESULT_FILE).write_text(json.dumps(asdict(wheel), indent=2) + "\n")


def publish_prebuilt(settings: Settings, target: Target, remote: str, config: ConfigureResult) -> str:
    """export-pkg the target's build with its input digests and upload it; returns the package reference."""
    out = settings.output_dir(target.name)
    if not (out / RESULT_FILE).is_file() or not (out / WHEEL_RESULT_FILE).is_file():
        raise ConfigurationError(f"no MXNet build and wheel for {target.name} in {settings.home}: "
                                 f"run 'invoke build --arch {target.name}' first")
    built = MxnetResult(**json.loads((out / RESULT_FILE).read_text()))
    # What the build recorded (with the options it was built with, --source included); a build of
    # an older toolchain recorded nothing: then this invocation's options must be the build's.
    inputs = built.package_inputs or current_inputs(target, settings, config)
    now = current_inputs(target, settings, config)
    changed = sorted(k for k in inputs if k != "source" and now.get(k) != inputs[k])
    if changed:
        raise ConfigurationError(f"the MXNet build of {target.name} is out of date ({', '.join(changed)} changed): "
                                 f"run 'invoke build --arch {target.name}' first")
    conan, env = conan_config.conan_command(), conan_config.conan_env(settings)
    with log.step("publish", target.name, f"{REFERENCE} (MXNet and its wheel) to Conan remote {remote}",
                  settings.logs_dir) as step, tempfile.TemporaryDirectory(prefix="nntc-prebuilt-") as tmp:
        stage(target, settings, Path(tmp) / "artifacts")
        graph = Path(tmp) / "graph.json"
        run([*conan, "export-pkg", RECIPE, *conan_config.profile_args(target), *option_args(inputs),
             "-c", f"user.nntc:artifacts={Path(tmp) / 'artifacts'}", f"--output-folder={Path(tmp) / 'generators'}",
             "--format=json", f"--out-file={graph}"],
            env=env, log_path=step.log_path, what=f"conan export-pkg {REFERENCE} for {target.name}")
        node = next(n for n in json.loads(graph.read_text())["graph"]["nodes"].values()
                    if n["ref"].startswith(REFERENCE))
        package = f"{node['ref']}:{node['package_id']}"
        run([*conan, "upload", package, "-r", remote, "--confirm"], env=env, log_path=step.log_path,
            what=f"conan upload {package} to {remote}")
        step.note = package
    return package


# -- consuming --------------------------------------------------------------------------------------

def use_prebuilt(target: Target, settings: Settings, config: ConfigureResult) -> MxnetResult | None:
    """The MXNet build from a remote (deployed in the home), or None: build it here."""
    policy = settings.prebuilt
    if policy == "never":
        return None
    inputs = current_inputs(target, settings, config)
    out = settings.output_dir(target.name)
    if (out / RESULT_FILE).is_file():
        previous = MxnetResult(**json.loads((out / RESULT_FILE).read_text()))
        if previous.package_inputs == inputs and Path(previous.library).is_file():
            if not previous.downloaded_from:
                return None  # built here with these inputs: make's stage says up to date
            if sha256_of(Path(previous.library)) == previous.library_sha256:
                previous.up_to_date = True
                return previous
    names = list(conan_config.configured_remotes(settings))
    if settings.offline or not names:
        why = "--offline" if settings.offline else "no Conan remote is configured (invoke use-remote)"
        if policy == "require":
            raise PrebuiltError(f"--prebuilt require: cannot download MXNet for {target.name}: {why}")
        return None
    with log.step("prebuilt", target.name, f"{REFERENCE} from Conan remote(s) {', '.join(names)}",
                  settings.logs_dir) as step:
        deploy = Path(tempfile.mkdtemp(prefix=".prebuilt-", dir=out))
        try:
            run([*conan_config.conan_command(), "install", f"--requires={REFERENCE}",
                 *conan_config.profile_args(target), *option_args(inputs), "--build=never",
                 "--deployer=direct_deploy", f"--deployer-folder={deploy}", f"--output-folder={deploy / 'generators'}"],
                env=conan_config.conan_env(settings), log_path=step.log_path,
                what=f"conan install {REFERENCE} for {target.name}")
        except BuildError as error:
            shutil.rmtree(deploy, ignore_errors=True)
            reason = failure_reason(error, target, settings, inputs, names)
            if policy == "require":
                raise PrebuiltError(f"--prebuilt require: {reason}", log_path=step.log_path) from None
            step.note = f"{reason}: building locally"
            log.warn(f"prebuilt [{target.name}]: {reason}: building locally")
            return None
        result = install(target, settings, deploy / "direct_deploy" / REFERENCE.split("/")[0], inputs, names)
        shutil.rmtree(deploy, ignore_errors=True)
        step.note = f"downloaded {Path(result.library).name} ({result.library_size} bytes) and the wheel"
    return result


def install(target: Target, settings: Settings, package: Path, inputs: dict[str, str], names: list[str]) -> MxnetResult:
    """Move the deployed package to out/<target>/prebuilt and write the MXNet and wheel results."""
    out = settings.output_dir(target.name)
    final = out / "prebuilt"
    shutil.rmtree(final, ignore_errors=True)
    shutil.copytree(package, final)
    mxnet = MxnetResult(**json.loads((final / RESULT_FILE).read_text()))
    mxnet.library = str(final / "lib" / "libmxnet.so")
    if sha256_of(Path(mxnet.library)) != mxnet.library_sha256:
        raise BuildError(f"the downloaded libmxnet.so for {target.name} does not match its recorded sha256")
    mxnet.package_inputs, mxnet.downloaded_from, mxnet.up_to_date = inputs, ", ".join(names), False
    wheel = WheelResult(**json.loads((final / WHEEL_RESULT_FILE).read_text()))
    wheels = out / "wheel"
    wheels.mkdir(exist_ok=True)
    for old in wheels.iterdir():
        old.unlink()
    for name in ("wheel", "sbom"):
        source = final / getattr(wheel, name)
        shutil.copyfile(source, wheels / source.name)
        setattr(wheel, name, str(wheels / source.name))
    wheel.inputs_digest = current_mxnet_wheel_digest(target, settings, Path(mxnet.library))
    wheel.save(out / WHEEL_RESULT_FILE)
    atomic_write_text(out / RESULT_FILE, json.dumps(asdict(mxnet), indent=2) + "\n")
    return mxnet


def failure_reason(error: BuildError, target: Target, settings: Settings, inputs: dict[str, str],
                   names: list[str]) -> str:
    """Why nothing was downloaded: the remote unreachable, or which input differs from its packages."""
    text = error.log_path.read_text(errors="replace")[-20000:] if error.log_path else str(error)
    if any(s in text for s in ("Failed to establish", "Connection refused", "ConnectionError", "Max retries")):
        return f"Conan remote(s) {', '.join(names)} unreachable"
    nearest = nearest_package(target, settings, inputs, names)
    if nearest is None:
        return f"no {REFERENCE} package for {target.name} on {', '.join(names)}"
    return (f"no {REFERENCE} package for {target.name} with these inputs on {', '.join(names)} "
            f"(the nearest differs in: {', '.join(nearest)})")


def nearest_package(target: Target, settings: Settings, inputs: dict[str, str], names: list[str]) -> list[str] | None:
    """The inputs in which the remote's closest package of this arch differs; None if it has none."""
    arch = target.conan_arch
    best: list[str] | None = None
    for remote in names:
        with tempfile.TemporaryDirectory() as tmp:
            listing = Path(tmp) / "list.json"
            try:
                run([*conan_config.conan_command(), "list", f"{REFERENCE}:*", "-r", remote, "--format=json",
                     f"--out-file={listing}"], env=conan_config.conan_env(settings),
                    log_path=Path(tmp) / "log", what="conan list")
            except BuildError:
                continue
            for recipe in json.loads(listing.read_text()).get(remote, {}).values():
                for revision in recipe.get("revisions", {}).values():
                    for package in revision.get("packages", {}).values():
                        info = package.get("info", {})
                        if info.get("settings", {}).get("arch") != arch:
                            continue
                        options = info.get("options", {})
                        differs = sorted(k for k in inputs if options.get(k) != inputs[k])
                        if best is None or len(differs) < len(best):
                            best = differs
    return best
