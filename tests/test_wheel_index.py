"""Wheels from a real package index (issue 15): a pypiserver on loopback with htpasswd users, uploads
with twine's API, installs with the target's own pip; and every bad input: an unreachable index,
wrong credentials, a different file under an existing name, an index that refuses the upload."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from nnpack_toolchain.wheel_index import IndexError_, index_sha256, simple_url, upload_wheels

USER, PASSWORD = "team", "s3cret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pure_wheel(directory: Path, body: str = "VALUE = 1\n", version: str = "1.0") -> Path:
    """A minimal valid wheel (py3-none-any) of a package `nntc_index_demo`."""
    directory.mkdir(parents=True, exist_ok=True)
    dist = f"nntc_index_demo-{version}.dist-info"
    files = {
        "nntc_index_demo/__init__.py": body,
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: nntc-index-demo\nVersion: {version}\nSummary: t\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: nntc-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(text.encode())}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = "\n".join(record) + "\n"
    wheel = directory / f"nntc_index_demo-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return wheel


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """pypiserver on loopback: anyone downloads, uploads need USER's password; no fallback to pypi.org."""
    from passlib.apache import HtpasswdFile

    root = tmp_path_factory.mktemp("index")
    (root / "packages").mkdir()
    users = HtpasswdFile(str(root / "htpasswd"), new=True)
    users.set_password(USER, PASSWORD)
    users.save()
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "pypiserver", "run", "-i", "127.0.0.1", "-p", str(port),
                               "-a", "update", "-P", root / "htpasswd", "--disable-fallback", root / "packages"],
                              stdout=subprocess.DEVNULL, stderr=open(root / "server.log", "w"))
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(100):
            with contextlib.suppress(OSError):
                urllib.request.urlopen(simple_url(url), timeout=2).close()
                break
            if server.poll() is not None:
                pytest.fail(f"pypiserver ended: {(root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_upload_lists_the_wheel_with_its_sha256_and_a_second_upload_is_a_no_op(index: str, tmp_path: Path) -> None:
    wheel = pure_wheel(tmp_path / "a")
    assert index_sha256(index, wheel) is None
    first = upload_wheels([wheel], index, user=USER, password=PASSWORD)
    assert first.uploaded == [wheel.name] and first.already_there == []
    assert index_sha256(index, wheel) == hashlib.sha256(wheel.read_bytes()).hexdigest()
    again = upload_wheels([wheel], index, user=USER, password=PASSWORD)
    assert again.uploaded == [] and again.already_there == [wheel.name]
    # pip (the host's here; the target's below) installs it from the index
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", tmp_path / "site",
                    "--index-url", simple_url(index), "nntc-index-demo==1.0"], check=True)
    assert (tmp_path / "site" / "nntc_index_demo" / "__init__.py").read_text() == "VALUE = 1\n"


def test_another_file_under_an_existing_name_is_refused_not_replaced(index: str, tmp_path: Path) -> None:
    original = pure_wheel(tmp_path / "a", version="2.0")
    upload_wheels([original], index, user=USER, password=PASSWORD)
    changed = pure_wheel(tmp_path / "b", body="VALUE = 2\n", version="2.0")
    with pytest.raises(IndexError_, match=r"holds another nntc_index_demo-2.0-py3-none-any.whl"):
        upload_wheels([changed], index, user=USER, password=PASSWORD)
    assert index_sha256(index, changed) == hashlib.sha256(original.read_bytes()).hexdigest()


def test_wrong_credentials_are_named(index: str, tmp_path: Path) -> None:
    wheel = pure_wheel(tmp_path, version="3.0")
    with pytest.raises(IndexError_, match=r"refused the credentials of user team \(40[13]\).*NNTC_INDEX_PASSWORD"):
        upload_wheels([wheel], index, user=USER, password="wrong")
    assert index_sha256(index, wheel) is None


def test_password_comes_from_the_environment(index: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NNTC_INDEX_PASSWORD", PASSWORD)
    wheel = pure_wheel(tmp_path, version="4.0")
    assert upload_wheels([wheel], index, user=USER).uploaded == [wheel.name]


def test_an_index_that_refuses_the_upload(index: str, tmp_path: Path) -> None:
    """The simple pages are read-only: a POST there is refused by the server, and said so."""
    wheel = pure_wheel(tmp_path, version="5.0")
    with pytest.raises(IndexError_, match="refused"):
        upload_wheels([wheel], simple_url(index) + "x/", user=USER, password=PASSWORD)


def test_an_unreachable_index_is_named(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/"
    with pytest.raises(IndexError_, match=rf"cannot reach the package index at {url}"):
        upload_wheels([pure_wheel(tmp_path)], url, user=USER, password=PASSWORD)


@pytest.mark.network
@pytest.mark.slow
def test_the_targets_own_pip_installs_from_the_index(index: str, tmp_path: Path) -> None:
    """A board (arm64, Debian 11's pip under QEMU) installs from the team's index."""
    from nnpack_toolchain.distros import DISTRIBUTIONS
    from nnpack_toolchain.settings import Settings
    from nnpack_toolchain.target_env import python_env
    from nnpack_toolchain.targets import TARGETS

    wheel = pure_wheel(tmp_path / "w", body="import platform\nMACHINE = platform.machine()\n", version="6.0")
    upload_wheels([wheel], index, user=USER, password=PASSWORD)
    env = python_env(TARGETS["arm64"], Settings(home=tmp_path / "home"), DISTRIBUTIONS["debian11"])
    env.install_from_index("nntc-index-demo==6.0", simple_url(index), tmp_path / "site", tmp_path / "log")
    proc = env.run(["-c", "import nntc_index_demo as d; print(d.MACHINE)"], extra_env={"PYTHONPATH": str(tmp_path / "site")})
    assert proc.returncode == 0 and proc.stdout.strip() == "aarch64", proc.stderr
