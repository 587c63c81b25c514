"""The deploy files say what the docs promise, and every asyncmig command in them parses.

No Docker engine or cluster is needed: compose.yaml, the k8s manifests and the CI
workflow are read as YAML, the Dockerfile as its instructions, and each ``asyncmig …``
command line they contain is parsed by the real command-line parser, so a renamed flag
breaks this test instead of a deploy.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from asyncmig.cli.app import app as cli_app

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "examples" / "k8s"

MIGRATE = ["migrate", "--wait-for-db", "60s", "--json"]


# --- readers -----------------------------------------------------------------------------


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _yaml_all(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "Dockerfile ends inside a continued line"
    out = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


def _final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (k, _) in enumerate(instructions) if k == "FROM")
    return instructions[last_from:]


def _dockerignore() -> list[tuple[bool, str]]:
    rules = []
    for raw in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        rules.append((negate, line.lstrip("!").strip("/")))
    return rules


def _excluded_from_context(rel: str) -> bool:
    """Docker's rule: the last matching pattern wins; a matched directory covers its files."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negate, pattern in _dockerignore():
        if pattern == "**" or any(fnmatch.fnmatchcase(p, pattern) for p in prefixes):
            excluded = not negate
    return excluded


def _workflow() -> dict[str, Any]:
    wf = _yaml(ROOT / ".github" / "workflows" / "ci.yml")
    # YAML 1.1 reads the bare key `on` as True.
    if True in wf:
        wf["on"] = wf.pop(True)
    return wf  # type: ignore[no-any-return]


def _steps_run(job: dict[str, Any]) -> list[str]:
    return [step["run"] for step in job.get("steps", []) if "run" in step]


def _uses(wf: dict[str, Any]) -> list[str]:
    return [s["uses"] for job in wf["jobs"].values() for s in job.get("steps", []) if "uses" in s]


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in container.get("env", [])}


def _manifest(kind: str, path: Path) -> dict[str, Any]:
    (doc,) = [d for d in _yaml_all(path) if d.get("kind") == kind]
    return doc  # type: ignore[no-any-return]


def _command_line(container: dict[str, Any]) -> list[str]:
    return [*container.get("command", []), *container.get("args", [])]


# --- the real CLI parser ---------------------------------------------------------------


def _parse(argv: list[str]) -> tuple[str, dict[str, Any], Any]:
    """Parse an ``asyncmig`` argv as the CLI would: (command name, its kwargs, options)."""
    _, meta_bound, _ = cli_app.meta.parse_args(argv, exit_on_error=False, print_error=False)
    command, bound, _ = cli_app.parse_args(
        list(meta_bound.args), exit_on_error=False, print_error=False
    )
    return command.__name__, dict(bound.kwargs), meta_bound.kwargs.get("options")


def _asyncmig_commands_in_text(text: str) -> list[list[str]]:
    found = []
    for line in text.splitlines():
        m = re.search(r"(?:^|[\s`])asyncmig\s+([a-z][^`#\n]*)", line)
        if m and not line.lstrip().startswith("#"):
            found.append(shlex.split(m.group(1)))
    return found


def _all_command_lines() -> dict[str, list[str]]:
    """Every asyncmig argv in the deploy files, keyed by where it comes from."""
    lines: dict[str, list[str]] = {}
    compose = _yaml(ROOT / "compose.yaml")
    for name, service in compose["services"].items():
        if "command" in service:
            lines[f"compose.yaml:{name}"] = service["command"]
    final = _final_stage(_dockerfile())
    (cmd,) = [json.loads(rest) for k, rest in final if k == "CMD"]
    lines["Dockerfile:CMD"] = cmd
    for path in (K8S / "deployment.yaml", K8S / "job.yaml"):
        for doc in _yaml_all(path):
            spec = doc["spec"]["template"]["spec"]
            for c in [*spec.get("initContainers", []), *spec["containers"]]:
                argv = _command_line(c)
                if argv[:1] == ["asyncmig"]:
                    lines[f"{path.name}:{c['name']}"] = argv[1:]
    readme = (K8S / "README.md").read_text(encoding="utf-8")
    for block in re.findall(r"```yaml\n(.*?)```", readme, re.S):
        for i, c in enumerate(yaml.safe_load(block)["initContainers"]):
            lines[f"k8s/README.md:yaml{i}"] = _command_line(c)[1:]
    for job_name, job in _workflow()["jobs"].items():
        for i, run in enumerate(_steps_run(job)):
            for j, argv in enumerate(_asyncmig_commands_in_text(run)):
                lines[f"ci.yml:{job_name}:{i}.{j}"] = argv
    return lines


def test_every_asyncmig_command_line_in_the_deploy_files_parses() -> None:
    lines = _all_command_lines()
    # The ones that matter most are really there.
    assert lines["Dockerfile:CMD"] == MIGRATE
    assert lines["deployment.yaml:migrate"] == MIGRATE
    assert lines["job.yaml:migrate"] == MIGRATE
    assert any(argv[:1] == ["wait"] for argv in lines.values())
    assert any(argv[:1] == ["validate"] for argv in lines.values())
    for where, argv in lines.items():
        try:
            _parse(argv)
        except Exception as exc:  # cyclopts' errors: unknown option, missing value…
            pytest.fail(f"{where}: `asyncmig {shlex.join(argv)}` does not parse: {exc}")
    name, _, options = _parse(MIGRATE)
    assert name == "migrate"
    assert options.wait_for_db == "60s"
    assert options.json is True


def test_asyncmig_environment_variables_in_the_deploy_files_are_read_by_the_cli(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings: dict[str, str] = {}
    for path in (K8S / "deployment.yaml", K8S / "job.yaml"):
        for doc in _yaml_all(path):
            spec = doc["spec"]["template"]["spec"]
            for c in [*spec.get("initContainers", []), *spec["containers"]]:
                for name, e in _env(c).items():
                    if name.startswith("ASYNCMIG_"):
                        settings[name] = e["value"]
    for service in _yaml(ROOT / "compose.yaml")["services"].values():
        for name, value in service.get("environment", {}).items():
            if name.startswith("ASYNCMIG_"):
                settings[name] = value
    assert {"ASYNCMIG_LOCK_TIMEOUT", "ASYNCMIG_STALE_AFTER", "ASYNCMIG_ENV"} <= set(settings)
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
        _, _, options = _parse(["status"])
        assert options is not None and value in vars(options).values(), name
        monkeypatch.delenv(name)


# --- compose.yaml -------------------------------------------------------------------------


def test_compose_db_is_healthchecked_and_migrate_waits_for_it() -> None:
    compose = _yaml(ROOT / "compose.yaml")
    db = compose["services"]["db"]
    assert re.fullmatch(r"postgres:1[3-8](\.\d+)?(-alpine)?", db["image"])
    check = db["healthcheck"]
    assert "pg_isready" in " ".join(check["test"])
    assert check["retries"] >= 10
    assert db["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:-")
    volume = db["volumes"][0].split(":")[0]
    assert volume in compose["volumes"], "db data lives in a named volume"

    migrate = compose["services"]["migrate"]
    assert migrate["build"] == "."
    assert migrate["depends_on"]["db"]["condition"] == "service_healthy"
    assert migrate["command"] == ["migrate", "--wait-for-db", "60s"]
    assert migrate["restart"] == "no"
    url = migrate["environment"]["DATABASE_URL"]
    assert re.fullmatch(r"postgresql://postgres@db:5432/app", url), "no password in the URL"
    assert migrate["environment"]["PGPASSWORD"] == db["environment"]["POSTGRES_PASSWORD"]
    assert url.rsplit("/", 1)[1] == db["environment"]["POSTGRES_DB"]


def test_compose_seed_runs_only_on_request_after_a_successful_migrate() -> None:
    seed = _yaml(ROOT / "compose.yaml")["services"]["seed"]
    assert seed["profiles"] == ["seed"]
    assert seed["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert seed["command"] == ["seed"]
    assert seed["environment"]["ASYNCMIG_ENV"] == "dev"
    assert (ROOT / "seeds" / "dev").is_dir()


# --- Dockerfile and .dockerignore ---------------------------------------------------------


def test_dockerfile_runs_asyncmig_as_a_numeric_non_root_user() -> None:
    instructions = _dockerfile()
    final = _final_stage(instructions)
    assert final[0][1].startswith("${PYTHON_IMAGE}") or "python:3.1" in final[0][1]
    args = {rest.split("=", 1)[0]: rest.split("=", 1)[1] for k, rest in instructions if k == "ARG"}
    assert re.fullmatch(r"python:3\.1[1-3]-slim", args["PYTHON_IMAGE"])

    users = [rest for k, rest in final if k == "USER"]
    assert users, "final stage must drop root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "numeric uid, so Kubernetes can verify non-root"
    # USER comes after every RUN/COPY that needs root.
    last_user = max(i for i, (k, _) in enumerate(final) if k == "USER")
    assert all(k not in ("RUN", "COPY") for k, _ in final[last_user:])

    (entrypoint,) = [json.loads(rest) for k, rest in final if k == "ENTRYPOINT"]
    assert entrypoint == ["asyncmig"]
    (cmd,) = [json.loads(rest) for k, rest in final if k == "CMD"]
    assert cmd == MIGRATE
    (workdir,) = [rest for k, rest in final if k == "WORKDIR"]
    assert workdir == "/migrations"
    copies = {tuple(rest.split()) for k, rest in final if k == "COPY"}
    for folder in ("sql/", "rollback/", "seeds/"):
        assert (folder, folder) in copies, folder  # relative to WORKDIR /migrations
    assert any("pip install ." in rest for k, rest in instructions if k == "RUN")


def test_docker_build_context_holds_what_the_dockerfile_copies_and_nothing_local() -> None:
    sources: list[str] = []
    for keyword, rest in _dockerfile():
        if keyword == "COPY" and not rest.startswith("--from"):
            sources += rest.split()[:-1]
    # hatchling needs the readme named in pyproject.toml to build the package.
    readme = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "readme"
    ]
    assert readme in sources
    needed: list[str] = []
    for src in sources:
        path = ROOT / src
        assert path.exists(), f"COPY {src}: no such file"
        files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
        needed += [p.relative_to(ROOT).as_posix() for p in files if "__pycache__" not in p.parts]
    assert "src/asyncmig/__init__.py" in needed
    assert "sql/001_create_users_table.sql" in needed
    for rel in needed:
        assert not _excluded_from_context(rel), f"{rel} is needed but .dockerignore drops it"
    for local in (".venv/bin/python", ".git/HEAD", ".pgdata/PG_VERSION", "tests/conftest.py",
                  "src/asyncmig/__pycache__/x.pyc", "backup_20260101_000000.sql"):  # fmt: skip
        assert _excluded_from_context(local), local


# --- Kubernetes ---------------------------------------------------------------------------


def _image_uid() -> int:
    users = [rest for k, rest in _final_stage(_dockerfile()) if k == "USER"]
    return int(users[-1].split(":")[0])


def test_deployment_migrates_in_an_init_container_with_the_url_from_a_secret() -> None:
    dep = _manifest("Deployment", K8S / "deployment.yaml")
    assert dep["apiVersion"] == "apps/v1"
    assert dep["spec"]["replicas"] > 1, "the point is many replicas at once"
    pod = dep["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert " ".join(_command_line(init)) == "asyncmig migrate --wait-for-db 60s --json"
    ref = _env(init)["DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] and ref["key"]
    assert "value" not in _env(init)["DATABASE_URL"], "no URL written into the manifest"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == _image_uid()
    assert init["securityContext"]["readOnlyRootFilesystem"] is True
    assert init["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["terminationGracePeriodSeconds"] >= 30
    (app,) = pod["containers"]
    assert app["image"] != init["image"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_job_variant_is_bounded_and_does_not_retry_what_cannot_succeed() -> None:
    job = _manifest("Job", K8S / "job.yaml")
    assert job["apiVersion"] == "batch/v1"
    spec = job["spec"]
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] in ("Never", "OnFailure")
    assert isinstance(spec["backoffLimit"], int) and 0 < spec["backoffLimit"] <= 10
    assert spec["activeDeadlineSeconds"] > 0
    assert spec["ttlSecondsAfterFinished"] > 0
    (container,) = pod["containers"]
    assert " ".join(_command_line(container)) == "asyncmig migrate --wait-for-db 60s --json"
    assert "secretKeyRef" in _env(container)["DATABASE_URL"]["valueFrom"]
    # podFailurePolicy needs restartPolicy Never and must name the real container.
    rules = spec["podFailurePolicy"]["rules"]
    assert pod["restartPolicy"] == "Never"
    fail_fast = [r for r in rules if r["action"] == "FailJob"]
    assert fail_fast[0]["onExitCodes"]["containerName"] == container["name"]
    # 1 migration failed, 2 usage, 3 validation: retrying cannot help. 4 and 5 can.
    assert set(fail_fast[0]["onExitCodes"]["values"]) == {1, 2, 3}
    assert pod["securityContext"]["runAsUser"] == _image_uid()


def test_k8s_readme_covers_locking_pgbouncer_and_wait_mode() -> None:
    text = (K8S / "README.md").read_text(encoding="utf-8")
    for phrase in ("pg_try_advisory_lock", "--stale-after", "heartbeat", "PgBouncer",
                   "transaction", "asyncmig wait", "session"):  # fmt: skip
        assert phrase in text, phrase


# --- CI workflow --------------------------------------------------------------------------


def test_workflow_lints_tests_the_matrix_and_validates() -> None:
    wf = _workflow()
    assert "push" in wf["on"] and "pull_request" in wf["on"]
    jobs = wf["jobs"]
    assert any("make lint" in run for job in jobs.values() for run in _steps_run(job))

    test = jobs["test"]
    matrix = test["strategy"]["matrix"]
    # Strings, not numbers: YAML would read 3.10 as 3.1.
    assert matrix["python"] == ["3.11", "3.12", "3.13"]
    assert matrix["postgres"] == ["13", "14", "15", "16", "17", "18"]
    assert test["strategy"]["fail-fast"] is False
    service = test["services"]["postgres"]
    assert service["image"] == "postgres:${{ matrix.postgres }}"
    assert "pg_isready" in service["options"] and "--health-retries" in service["options"]
    assert "5432:5432" in service["ports"]
    assert test["env"]["ASYNCMIG_TEST_DSN"].startswith("postgresql://")
    assert "localhost:5432" in test["env"]["ASYNCMIG_TEST_DSN"]
    assert any("pytest" in run for run in _steps_run(test))
    setup = [s for s in test["steps"] if s.get("uses", "").startswith("actions/setup-python")]
    assert setup[0]["with"]["python-version"] == "${{ matrix.python }}"

    validate = jobs["validate"]
    runs = "\n".join(_steps_run(validate))
    assert re.search(r"^asyncmig validate\b", runs, re.M)
    assert "postgres" in validate["services"]

    for use in _uses(wf):
        action, _, version = use.partition("@")
        if action == "actions/checkout":
            assert version == "v4"
        if action == "actions/setup-python":
            assert version == "v5"
    assert all("timeout-minutes" in job for job in jobs.values()), "every job is bounded"
    assert wf["permissions"] == {"contents": "read"}
