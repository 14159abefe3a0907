"""Expected failures: each carries the message a user needs and an exit code.

Tasks print these as one line plus the log path, without a traceback.
"""

from __future__ import annotations

from pathlib import Path


class ToolchainError(Exception):
    exit_code = 1

    def __init__(self, message: str, *, log_path: Path | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.log_path = log_path


class UnknownTargetError(ToolchainError):
    exit_code = 2

    def __init__(self, given: str, valid: list[str]) -> None:
        super().__init__(
            f"unknown target {given!r}; valid targets: {'; '.join(valid)}; or 'all'"
        )


class ConfigurationError(ToolchainError):
    """Bad option values or combinations given by the user."""

    exit_code = 2


class MissingToolError(ToolchainError):
    exit_code = 3

    def __init__(self, missing: dict[str, str]) -> None:
        packages = sorted(set(missing.values()))
        tools = ", ".join(sorted(missing))
        super().__init__(
            f"missing host tools: {tools}. Install them with: "
            f"apt-get install -y {' '.join(packages)}  (or run: invoke setup)"
        )
        self.missing = missing


class SourceError(ToolchainError):
    """A source could not be obtained or failed verification."""

    exit_code = 4


class ChecksumMismatchError(SourceError):
    def __init__(self, name: str, origin: str, expected: str, actual: str) -> None:
        super().__init__(
            f"{name}: sha256 mismatch for {origin}: expected {expected}, got {actual}. "
            "The file was discarded; nothing was built. If upstream really changed, update the "
            "pin in the recipe's conandata.yml after checking the new archive."
        )


class MissingSourceError(SourceError):
    def __init__(self, missing: list[str], *, offline: bool) -> None:
        how = (
            "Offline mode never downloads: copy a filled source cache here "
            "(see README, 'Air-gapped machines'), use 'invoke fetch --from-git NAME=DIR', "
            "or name a local directory with --source NAME=DIR."
            if offline
            else "Run 'invoke fetch' with network access, or use --source NAME=DIR."
        )
        super().__init__("sources missing from the source cache:\n  " + "\n  ".join(missing) + "\n" + how)
        self.missing = missing


class PatchError(ToolchainError):
    exit_code = 5


class BuildError(ToolchainError):
    exit_code = 6


class VerificationError(ToolchainError):
    """An artifact came out wrong (wrong machine, wrong backend, failing tests)."""

    exit_code = 7
