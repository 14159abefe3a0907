"""config.mk rendering: reviewed expectations per target, escaping, refusals."""

from pathlib import Path

import pytest

from nnpack_toolchain.compilers import Compilers
from nnpack_toolchain.configure import TEMPLATE, config_values, make_value, render, shell_words
from nnpack_toolchain.distros import DISTRIBUTIONS
from nnpack_toolchain.errors import ConfigurationError
from nnpack_toolchain.nnpack import NnpackResult, SuiteSummary
from nnpack_toolchain.targets import TARGETS

EXPECTED = Path(__file__).parent / "expected"


def fake_nnpack(target_name: str, root: str = "/opt/nntc") -> NnpackResult:
    prefix = f"{root}/out/{target_name}/deploy/direct_deploy"
    return NnpackResult(
        target=target_name, reference="nnpack/0.0.0.cci.20230202", backend="neon", prefix=f"{prefix}/nnpack",
        library=f"{prefix}/nnpack/lib/libnnpack.so",
        include_dirs=[f"{prefix}/nnpack/include", f"{prefix}/pthreadpool/include"],
        library_sha256="0" * 64, library_size=1, tests=SuiteSummary(), sources=[], inputs_digest="x",
    )


def rendered(target_name: str, root: str = "/opt/nntc", sysroot: Path | None = None) -> str:
    sysroot = sysroot or Path(f"{root}/sysroots/{target_name}")
    target = TARGETS[target_name]
    compilers = Compilers(target, DISTRIBUTIONS["debian11"], Path(f"{root}/compilers/debian11-{target_name}"))
    tree = Path(f"{root}/build/{target_name}/debian11/mxnet-1.9.1")
    return render(TEMPLATE.read_text(),
                  config_values(target, fake_nnpack(target_name, root), sysroot, compilers, Path(root), tree))


@pytest.mark.parametrize("target_name", list(TARGETS))
def test_rendered_config_matches_reviewed_expectation(target_name):
    expected = (EXPECTED / f"config-{target_name}.mk").read_text()
    assert rendered(target_name) == expected


def test_host_probed_switches_are_pinned_per_target():
    arm = rendered("armv7")
    assert "USE_SSE = 0" in arm and "USE_F16C = 0" in arm and "USE_MKLDNN = 0" in arm and "USE_INTGEMM = 0" in arm
    assert "/usr/bin/arm-linux-gnueabihf-g++-10 --sysroot=" in arm
    assert "-mfpu=neon-vfpv4" in arm and "USE_NNPACK = 1" in arm
    assert "USE_SSE = 1" in rendered("x86_64")


def test_paths_with_spaces_quotes_and_dollars_are_escaped():
    text = rendered("arm64", root="/home/a user/it's $HOME #1")
    line = next(l for l in text.splitlines() if l.startswith("ADD_CFLAGS"))
    # shell-quoted for the recipe's shell, $ doubled and # escaped for make
    assert "'-I/home/a user/it'\"'\"'s $$HOME \\#1/out/arm64/deploy/direct_deploy/nnpack/include'" in line
    ld = next(l for l in text.splitlines() if l.startswith("ADD_LDFLAGS"))
    assert "'-Wl,-rpath,$$ORIGIN'" in ld and "-lm -lpthread" in ld


@pytest.mark.parametrize("bad", ["a\nb", "x\r", "nul\0", "trailing\\"])
def test_values_make_cannot_express_are_refused(bad):
    with pytest.raises(ConfigurationError, match="ADD_CFLAGS"):
        make_value(bad, name="ADD_CFLAGS")


def test_newlines_in_flags_are_refused_even_when_quoted():
    with pytest.raises(ConfigurationError, match="newline"):
        shell_words(["-I/ok", "-I/bad\npath"], name="ADD_CFLAGS")


def test_template_and_values_must_agree():
    with pytest.raises(ConfigurationError, match="missing values"):
        render("A = @A@\nB = @B@\n", {"A": "1"})
    with pytest.raises(ConfigurationError, match="unused"):
        render("A = @A@\n", {"A": "1", "C": "2"})


def test_configure_without_nnpack_build_says_what_to_run(tmp_path):
    from conftest import run_invoke

    proc = run_invoke("configure", "--arch", "arm64", "--home", str(tmp_path))
    assert proc.returncode == 8, proc.stderr
    assert "run 'invoke nnpack --arch arm64' first" in proc.stderr
    assert not (tmp_path / "out" / "arm64" / "config.mk").exists()


def test_no_path_of_the_build_home_is_left_in_the_library():
    """Issue 15: __FILE__ of the tree's sources maps to ./..., other home paths to /nntc-home (the last map
    wins in GCC, so the tree's comes last), and no RUNPATH names the home."""
    text = rendered("arm64", root="/srv/home one")
    cflags = next(l for l in text.splitlines() if l.startswith("ADD_CFLAGS"))
    assert cflags.endswith("'-ffile-prefix-map=/srv/home one=/nntc-home' "
                           "'-ffile-prefix-map=/srv/home one/build/arm64/debian11/mxnet-1.9.1=.'")
    ld = next(l for l in text.splitlines() if l.startswith("ADD_LDFLAGS"))
    assert "-rpath,/srv" not in ld and "'-Wl,-rpath-link,/srv/home one/out/arm64/" in ld


def test_configure_rewrites_config_mk_only_when_its_content_changes(tmp_path, monkeypatch):
    """An unchanged config.mk keeps its timestamp (make and the MXNet digest see no change); a new value rewrites it.

    What configure() writes is compared with the reviewed file, not with the renderer's output.
    """
    import os

    from nnpack_toolchain import configure as configure_module
    from nnpack_toolchain.settings import Settings

    root = {"path": "/opt/nntc"}
    monkeypatch.setattr(configure_module, "load_nnpack", lambda target, settings: fake_nnpack(target.name, root["path"]))
    monkeypatch.setattr(configure_module, "build_sysroot",
                        lambda target, settings, packages: Path("/opt/nntc/sysroots") / target.name)
    monkeypatch.setattr(configure_module, "ensure_compilers", lambda target, settings: Compilers(  # no download
        target, settings.distribution, Path(f"/opt/nntc/compilers/{settings.base}-{target.name}")))
    settings = Settings(home=tmp_path / "home")
    # the faked NNPACK, sysroot and compilers are under /opt/nntc; the prefix maps name the real home
    reviewed = (EXPECTED / "config-armv7.mk").read_text().replace("-ffile-prefix-map=/opt/nntc",
                                                                  f"-ffile-prefix-map={settings.home}")
    first = configure_module.configure(TARGETS["armv7"], settings)
    assert first.changed and first.config_mk.read_text() == reviewed
    os.utime(first.config_mk, ns=(1_000_000_000, 1_000_000_000))
    second = configure_module.configure(TARGETS["armv7"], settings)
    assert not second.changed and first.config_mk.stat().st_mtime_ns == 1_000_000_000
    root["path"] = "/srv/other home"
    third = configure_module.configure(TARGETS["armv7"], settings)
    assert third.changed
    text = third.config_mk.read_text()
    # Only the lines naming NNPACK's location changed, and they now name the new one, shell-quoted.
    changed = [(old, new) for old, new in zip(reviewed.splitlines(), text.splitlines(), strict=True) if old != new]
    assert [old.split(" = ")[0] for old, _ in changed] == ["ADD_CFLAGS", "ADD_LDFLAGS"]
    assert all("/opt/nntc/out" in old and "/opt/nntc/out" not in new for old, new in changed)
    assert "'-I/srv/other home/out/armv7/deploy/direct_deploy/nnpack/include'" in changed[0][1]
    assert "'-L/srv/other home/out/armv7/deploy/direct_deploy/nnpack/lib'" in changed[1][1]
    assert "'-Wl,-rpath-link,/srv/other home/out/armv7/deploy/direct_deploy/nnpack/lib'" in changed[1][1]
    assert not list(first.config_mk.parent.glob("*.tmp")), "no temporary file is left next to config.mk"
