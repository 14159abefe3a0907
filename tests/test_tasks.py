"""The Invoke tasks as a user runs them: errors are one clear line and an exit code."""

import os

from conftest import run_invoke


def test_unknown_target_is_refused_with_the_valid_list(tmp_path):
    proc = run_invoke("nnpack", "--arch", "riscv64", "--home", str(tmp_path))
    assert proc.returncode == 2
    assert "unknown target 'riscv64'" in proc.stderr
    assert "arm64 (also: aarch64" in proc.stderr and "Traceback" not in proc.stderr


def test_missing_cross_compiler_names_the_debian_package(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # A PATH with python and the common tools but no ARM cross compiler and no QEMU.
    for tool in ("python3", "cmake", "ninja", "pkg-config", "ccache", "readelf", "git", "file", "gzip", "xz",
                 "dpkg-source", "patch", "make", "x86_64-linux-gnu-gcc", "x86_64-linux-gnu-g++"):
        for directory in os.environ["PATH"].split(os.pathsep):
            if os.path.exists(os.path.join(directory, tool)):
                os.symlink(os.path.join(directory, tool), bin_dir / tool)
                break
    proc = run_invoke("nnpack", "--arch", "arm64", "--home", str(tmp_path / "home"), env={"PATH": str(bin_dir)})
    assert proc.returncode == 3, proc.stderr
    assert "aarch64-linux-gnu-gcc" in proc.stderr and "qemu-aarch64" in proc.stderr
    assert "apt-get install -y g++-aarch64-linux-gnu gcc-aarch64-linux-gnu qemu-user" in proc.stderr


def test_offline_with_empty_cache_fails_before_building(tmp_path):
    proc = run_invoke("nnpack", "--arch", "armv7", "--offline", "--home", str(tmp_path),
                      "--source-cache", str(tmp_path / "empty-cache"))
    assert proc.returncode == 4, proc.stderr
    assert "nnpack/0.0.0.cci.20230202" in proc.stderr and "3d8e1462a390dd0309924edbaefb15139d7135ee6be127cc82950b75bd9835bc" in proc.stderr
    assert not (tmp_path / "conan" / "p").exists(), "nothing may be built when sources are missing"


def test_bad_backend_and_bad_source_option(tmp_path):
    proc = run_invoke("nnpack", "--arch", "arm64", "--backend", "x86-64", "--home", str(tmp_path))
    assert proc.returncode == 2 and "not available for arm64" in proc.stderr
    proc = run_invoke("nnpack", "--arch", "arm64", "--source", "nnpack", "--home", str(tmp_path))
    assert proc.returncode == 2 and "NAME=DIR" in proc.stderr


def test_doctor_reports_every_tool(tmp_path):
    proc = run_invoke("doctor")
    assert proc.returncode in (0, 3)
    for tool in ("arm-linux-gnueabihf-gcc", "qemu-arm", "qemu-aarch64", "ninja", "cmake", "meson", "conan", "python3"):
        assert tool in proc.stderr
