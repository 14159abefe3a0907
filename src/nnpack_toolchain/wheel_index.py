"""Wheels served from a package index: any PyPI-compatible server (pypiserver, devpi, ...).

`upload_wheels` uploads with twine's own API (its `upload` command, non-interactive): boards then
install with `pip install mxnet==1.9.1+nnpack.<commit> --index-url <index>/simple/`. A wheel
already on the index with the same sha256 (builds are reproducible) is skipped; one with the same
name but other bytes is a conflict, never overwritten. The password comes from the argument or
$NNTC_INDEX_PASSWORD and never reaches a log or a command line.
"""

from __future__ import annotations

import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from . import log
from .errors import ToolchainError
from .sources import sha256_of

PASSWORD_ENV = "NNTC_INDEX_PASSWORD"


class IndexError_(ToolchainError):  # noqa: N801 - IndexError is a builtin
    """The index could not be reached, refused the credentials or refused a wheel."""

    exit_code = 9


@dataclass
class IndexUpload:
    url: str
    uploaded: list[str] = field(default_factory=list)
    already_there: list[str] = field(default_factory=list)


def simple_url(url: str) -> str:
    """The index's PEP 503 page root: what pip's --index-url takes."""
    return url.rstrip("/") + "/simple/"


def project_of(wheel: Path) -> str:
    return re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]).lower()


def index_sha256(url: str, wheel: Path) -> str | None:
    """The sha256 the index lists for the wheel's file name; None if it has no such file."""
    page = simple_url(url) + project_of(wheel) + "/"
    try:
        with urllib.request.urlopen(page, timeout=30) as response:  # noqa: S310 - the user's index URL
            html = response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return None
        raise IndexError_(f"the index at {url} answered {error.code} {error.reason} for {page}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise IndexError_(f"cannot reach the package index at {url} ({reason}); is the server running? "
                          "check --index") from None
    for match in re.finditer(r'href="([^"#]+)#sha256=([0-9a-f]{64})"', html):
        if match.group(1).rsplit("/", 1)[-1] == wheel.name:
            return match.group(2)
    return None


def upload_wheels(wheels: list[Path], url: str, *, user: str | None = None, password: str | None = None,
                  log_path: Path | None = None) -> IndexUpload:
    """Upload each wheel (skipping one the index already holds with the same bytes)."""
    from requests.exceptions import ConnectionError as RequestsConnectionError
    from requests.exceptions import HTTPError
    from twine.commands.upload import upload
    from twine.exceptions import TwineException
    from twine.settings import Settings as TwineSettings

    password = password if password is not None else os.environ.get(PASSWORD_ENV, "")
    result = IndexUpload(url=url)
    todo: list[Path] = []
    for wheel in wheels:
        listed = index_sha256(url, wheel)
        if listed is None:
            todo.append(wheel)
        elif listed == sha256_of(wheel):
            result.already_there.append(wheel.name)
        else:
            raise IndexError_(f"the index at {url} holds another {wheel.name} (sha256 {listed[:12]}, this one "
                              f"{sha256_of(wheel)[:12]}); an index never replaces a file: delete it there or "
                              "build a new version")
    if not todo:
        return result
    os.environ.setdefault("PYTHON_KEYRING_BACKEND", "keyring.backends.null.Keyring")  # no desktop keyring
    settings = TwineSettings(repository_url=url.rstrip("/") + "/", username=user or "nntc", password=password,
                             non_interactive=True, disable_progress_bar=True)
    try:
        upload(settings, [str(w) for w in todo])
    except HTTPError as error:
        status = error.response.status_code if error.response is not None else 0
        if status in (401, 403):
            raise IndexError_(f"the index at {url} refused the credentials of user {user or '(none)'} ({status}); "
                              f"check --index-user and ${PASSWORD_ENV}", log_path=log_path) from None
        raise IndexError_(f"the index at {url} refused the upload ({error}); nothing more was uploaded",
                          log_path=log_path) from None
    except RequestsConnectionError:
        raise IndexError_(f"cannot reach the package index at {url}; is the server running? check --index",
                          log_path=log_path) from None
    except TwineException as error:
        raise IndexError_(f"twine could not upload to {url}: {error}", log_path=log_path) from None
    result.uploaded = [w.name for w in todo]
    log.info(f"index: uploaded {', '.join(result.uploaded)} to {url}")
    return result
