"""The build report: what `invoke build --report FILE` writes for CI.

One JSON document per `invoke build` run: per target, the status and time of each step, the
artifacts (path, size, sha256) and the test counts. The format is report_schema.json (JSON
Schema draft 2020-12); `validate_report` checks a document against it plus the few rules a
schema cannot say (no target or step twice, steps in pipeline order, `ok` consistent with the
steps, `finished` not before `started`) and raises VerificationError naming the bad field, e.g.
`targets[0].artifacts[1].sha256`.

    python3 -m nnpack_toolchain.report validate FILE   # exit 0, or 7 naming the bad field
    python3 -m nnpack_toolchain.report summary FILE    # Markdown for $GITHUB_STEP_SUMMARY
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import VerificationError
from .files import atomic_write_text

SCHEMA_VERSION = 1
SCHEMA_RESOURCE = "report_schema.json"
STEPS = ("fetch", "nnpack", "configure", "mxnet", "wheel", "smoke")
"""The steps of `invoke build`, in the order they run."""
STATUSES = ("built", "downloaded", "up_to_date", "failed", "skipped", "not_run")
OK_STATUSES = ("built", "downloaded", "up_to_date", "skipped")
"""Statuses that leave a target ok; `failed` and `not_run` do not."""
ARTIFACT_KINDS = ("libnnpack", "libmxnet", "config_mk", "wheel", "sbom", "report")


class ReportValidationError(VerificationError):
    """A build report that does not match the schema; `problems` lists (field path, message)."""

    def __init__(self, problems: list[tuple[str, str]], *, source: str = "build report") -> None:
        self.problems = problems
        first_path, first_message = problems[0]
        lines = [f"{source}: {first_path}: {first_message}"]
        lines += [f"  also {path}: {message}" for path, message in problems[1:]]
        super().__init__("\n".join(lines))
        self.field = first_path


# --------------------------------------------------------------------------------------------
# Records


@dataclass
class StepRecord:
    step: str
    status: str
    seconds: float = 0.0
    log: str | None = None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "status": self.status, "seconds": round(float(self.seconds), 3),
                "log": None if self.log is None else str(self.log), "detail": self.detail}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepRecord:
        return cls(step=data["step"], status=data["status"], seconds=data["seconds"], log=data["log"],
                   detail=data["detail"])


@dataclass
class Artifact:
    kind: str
    path: str
    size: int
    sha256: str

    @classmethod
    def from_path(cls, kind: str, path: str | os.PathLike[str]) -> Artifact:
        """Record an existing file: absolute path, size in bytes, sha256 of its contents."""
        file = Path(path).resolve()
        digest = hashlib.sha256()
        with file.open("rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                digest.update(chunk)
        return cls(kind=kind, path=str(file), size=file.stat().st_size, sha256=digest.hexdigest())

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": str(self.path), "size": self.size, "sha256": self.sha256}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Artifact:
        return cls(kind=data["kind"], path=data["path"], size=data["size"], sha256=data["sha256"])


@dataclass
class TestCounts:
    __test__ = False  # not a pytest test class

    passed: int = 0
    failed: int = 0
    skipped: int = 0

    def add(self, other: TestCounts) -> None:
        self.passed += other.passed
        self.failed += other.failed
        self.skipped += other.skipped

    def to_dict(self) -> dict[str, int]:
        return {"passed": self.passed, "failed": self.failed, "skipped": self.skipped}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TestCounts:
        return cls(passed=data["passed"], failed=data["failed"], skipped=data["skipped"])


@dataclass
class Host:
    machine: str
    cpu: str
    cores: int

    @classmethod
    def current(cls) -> Host:
        return cls(machine=platform.machine() or "unknown", cpu=_cpu_model(), cores=os.cpu_count() or 1)

    def to_dict(self) -> dict[str, Any]:
        return {"machine": self.machine, "cpu": self.cpu, "cores": self.cores}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Host:
        return cls(machine=data["machine"], cpu=data["cpu"], cores=data["cores"])


@dataclass
class TargetReport:
    target: str
    steps: list[StepRecord] = field(default_factory=list)
    artifacts: list[Artifact] = field(default_factory=list)
    tests: TestCounts = field(default_factory=TestCounts)
    ok: bool | None = None
    """None: derived, ok when there are steps, all ended built/up_to_date/skipped, no test failed."""

    @property
    def is_ok(self) -> bool:
        if self.ok is not None:
            return self.ok
        return bool(self.steps) and all(s.status in OK_STATUSES for s in self.steps) and self.tests.failed == 0

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "ok": self.is_ok, "steps": [s.to_dict() for s in self.steps],
                "artifacts": [a.to_dict() for a in self.artifacts], "tests": self.tests.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TargetReport:
        return cls(target=data["target"], ok=data["ok"], steps=[StepRecord.from_dict(s) for s in data["steps"]],
                   artifacts=[Artifact.from_dict(a) for a in data["artifacts"]],
                   tests=TestCounts.from_dict(data["tests"]))


@dataclass
class BuildReport:
    toolchain_version: str = field(default_factory=lambda: toolchain_version())
    started: str = field(default_factory=lambda: utc_now())
    finished: str | None = None
    """None: set to the current time by to_dict() (i.e. when written)."""
    host: Host = field(default_factory=Host.current)
    targets: list[TargetReport] = field(default_factory=list)
    ok: bool | None = None
    """None: derived, ok when there is at least one target and every target is ok."""

    @property
    def is_ok(self) -> bool:
        if self.ok is not None:
            return self.ok
        return bool(self.targets) and all(t.is_ok for t in self.targets)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "toolchain_version": self.toolchain_version,
            "started": self.started,
            "finished": self.finished or utc_now(),
            "host": self.host.to_dict(),
            "ok": self.is_ok,
            "targets": [t.to_dict() for t in self.targets],
        }

    def to_json(self) -> str:
        """The report as JSON text; raises ReportValidationError if it does not match the schema."""
        data = self.to_dict()
        validate_report(data)
        return json.dumps(data, indent=2) + "\n"

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Validate, then write atomically: a reader sees the old file or the whole new one."""
        return atomic_write_text(path, self.to_json())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BuildReport:
        validate_report(data)
        return cls(toolchain_version=data["toolchain_version"], started=data["started"], finished=data["finished"],
                   host=Host.from_dict(data["host"]), targets=[TargetReport.from_dict(t) for t in data["targets"]],
                   ok=data["ok"])

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> BuildReport:
        return cls.from_dict(read_report(path))


# --------------------------------------------------------------------------------------------
# Validation


@lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    return json.loads(resources.files(__package__).joinpath(SCHEMA_RESOURCE).read_text(encoding="utf-8"))


def _field_path(parts) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _schema_problems(data: Any) -> list[tuple[str, str]]:
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(load_schema(), format_checker=Draft202012Validator.FORMAT_CHECKER)
    problems: list[tuple[str, str]] = []
    for error in validator.iter_errors(data):
        parts = list(error.absolute_path)
        message = error.message
        if error.validator == "required" and isinstance(error.instance, dict):
            # One error per missing property; name the missing field itself.
            missing = [p for p in error.validator_value if p not in error.instance and repr(p) in error.message]
            if missing:
                parts.append(missing[0])
                message = "required field is missing"
        elif error.validator == "additionalProperties" and isinstance(error.instance, dict):
            known = error.schema.get("properties", {})
            extra = sorted(k for k in error.instance if k not in known)
            for name in extra:
                problems.append((_field_path([*parts, name]), "unknown field (not in the report schema)"))
            continue
        elif error.validator in ("enum", "const"):
            allowed = error.validator_value if error.validator == "enum" else [error.validator_value]
            message = f"{error.instance!r} is not one of {', '.join(map(repr, allowed))}"
        elif error.validator == "pattern" and parts and parts[-1] == "sha256":
            message = f"{error.instance!r} is not a sha256 (64 lower-case hex digits)"
        elif error.validator in ("pattern", "format") and parts and parts[-1] in ("started", "finished"):
            message = f"{error.instance!r} is not an ISO-8601 date-time with a UTC offset (e.g. 2025-01-31T12:00:00Z)"
        problem = (_field_path(parts), message)
        if problem not in problems:
            problems.append(problem)
    return problems


def _parse_time(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (TypeError, ValueError):
        return None


def _semantic_problems(data: dict[str, Any]) -> list[tuple[str, str]]:
    """Rules the schema cannot express; only run on schema-valid documents."""
    problems: list[tuple[str, str]] = []
    started, finished = _parse_time(data["started"]), _parse_time(data["finished"])
    if started and finished and finished < started:
        problems.append(("finished", f"{data['finished']} is before started {data['started']}"))
    seen_targets: set[str] = set()
    for i, target in enumerate(data["targets"]):
        where = f"targets[{i}]"
        if target["target"] in seen_targets:
            problems.append((f"{where}.target", f"target {target['target']!r} appears twice"))
        seen_targets.add(target["target"])
        order = [s["step"] for s in target["steps"]]
        for j, name in enumerate(order):
            if name in order[:j]:
                problems.append((f"{where}.steps[{j}].step", f"step {name!r} appears twice"))
        known = [n for n in order if n in STEPS]
        if known != sorted(known, key=STEPS.index) and len(set(known)) == len(known):
            problems.append((f"{where}.steps", f"steps out of order {order}; the order is {list(STEPS)}"))
        if target["ok"]:
            for j, step in enumerate(target["steps"]):
                if step["status"] not in OK_STATUSES:
                    problems.append((f"{where}.ok", f"true but steps[{j}] ({step['step']}) is {step['status']}"))
            if target["tests"]["failed"]:
                problems.append((f"{where}.ok", f"true but {target['tests']['failed']} tests failed"))
    if data["ok"]:
        for i, target in enumerate(data["targets"]):
            if not target["ok"]:
                problems.append(("ok", f"true but targets[{i}] ({target['target']}) is not ok"))
    return problems


def validate_report(data: Any, *, source: str = "build report") -> None:
    """Check a report document (parsed JSON); raise ReportValidationError (a VerificationError)
    whose message starts with the path of the first bad field, e.g. `targets[0].steps[2].status`."""
    problems = _schema_problems(data)
    if not problems:
        problems = _semantic_problems(data)
    if problems:
        raise ReportValidationError(problems, source=source)


def read_report(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a report file."""
    file = Path(path)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise VerificationError(f"no build report at {file}") from None
    except json.JSONDecodeError as exc:
        raise VerificationError(f"{file}: not JSON: {exc}") from None
    validate_report(data, source=str(file))
    return data


# --------------------------------------------------------------------------------------------
# Helpers


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def toolchain_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nnpack-toolchain")
    except PackageNotFoundError:
        return "0+unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware", "cpu model"):
                return value.strip()
    except OSError:
        pass
    return platform.processor()


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def summary_markdown(data: dict[str, Any]) -> str:
    """A Markdown summary of a (valid) report, for $GITHUB_STEP_SUMMARY or a job log."""
    verdict = "ok" if data["ok"] else "FAILED"
    host = data["host"]
    lines = [
        f"## nnpack-toolchain build: {verdict}",
        "",
        (f"toolchain {data['toolchain_version']}; host {host['machine']}, {host['cpu'] or 'unknown CPU'}, "
         f"{host['cores']} cores; {data['started']} to {data['finished']}"),
        "",
        "| target | ok | " + " | ".join(STEPS) + " | tests passed/failed/skipped |",
        "|---" * (len(STEPS) + 3) + "|",
    ]
    for target in data["targets"]:
        by_step = {s["step"]: s for s in target["steps"]}
        cells = []
        for name in STEPS:
            step = by_step.get(name)
            if step is None or step["status"] == "not_run":
                cells.append("" if step is None else "not_run")
            else:
                cells.append(f"{step['status']} {step['seconds']:.0f} s")
        tests = target["tests"]
        lines.append(f"| {target['target']} | {'yes' if target['ok'] else '**no**'} | " + " | ".join(cells)
                     + f" | {tests['passed']}/{tests['failed']}/{tests['skipped']} |")
    failures = [(t["target"], s) for t in data["targets"] for s in t["steps"] if s["status"] == "failed"]
    if failures:
        lines += ["", "### Failed steps", ""]
        for name, step in failures:
            lines.append(f"- {name} {step['step']}: {step['detail'] or 'failed'}"
                         + (f" (log: `{step['log']}`)" if step["log"] else ""))
    artifacts = [(t["target"], a) for t in data["targets"] for a in t["artifacts"]]
    if artifacts:
        lines += ["", "### Artifacts", "", "| target | kind | file | size | sha256 |", "|---|---|---|---|---|"]
        for name, artifact in artifacts:
            lines.append(f"| {name} | {artifact['kind']} | `{Path(artifact['path']).name}` | "
                         f"{_size(artifact['size'])} | `{artifact['sha256']}` |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in ("validate", "summary"):
        print("usage: python3 -m nnpack_toolchain.report {validate|summary} REPORT.json", file=sys.stderr)
        return 2
    command, path = args
    try:
        data = read_report(path)
    except VerificationError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    if command == "summary":
        sys.stdout.write(summary_markdown(data))
    else:
        print(f"{path}: valid build report (schema_version {data['schema_version']}), ok={data['ok']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
