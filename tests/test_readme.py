"""The README and the pages under docs/ stay true: every `batchcli ...` command they show is exercised by a test.

A command shown in a page is one of three kinds:
- a synopsis (it holds `[`), such as `batchcli runs [-d OUTPUT_DIR]`: its options are checked against the
  command's real `--help`;
- a command listed in ``COVERED_ELSEWHERE``, which needs a fixture another test file already builds (an installed
  package, a Dask scheduler, the nested-configuration project): the entry names that test, and the test must exist;
- anything else runs here, against real runs in a temporary directory, with the placeholders `RUN_DIR`,
  `OUTPUT_DIR`, `PATH` and `NAME` filled in.
So a page that shows a new command form fails here until a test covers it. The pages also never link outside the
repository, and every relative link (and its `#anchor`) resolves.
"""

from __future__ import annotations

import re
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from batchcli.cli import app
from tests.conftest import newest_run, subprocess_env

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README = (ROOT / "README.md").read_text(encoding="utf-8")

FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```", flags=re.S | re.M)
# Blocks in these languages show code or pictures, not commands to type.
NOT_SHELL = {"python", "toml", "text"}
# A shell line's batchcli command: optional VAR=value prefixes, an optional directory before the script name.
SHELL_COMMAND = re.compile(r"((?:\b[A-Z][A-Z0-9_]*=\S+\s+)*)(?:[\w.]*/)*\bbatchcli\s+(\S.*)")
INLINE_COMMAND = re.compile(r"`((?:[A-Z][A-Z0-9_]*=\S+\s+)*batchcli\s[^`]+)`")

# Commands that need a fixture another test file builds, with the test that runs that very form.
COVERED_ELSEWHERE = {
    "batchcli exec sync -c config_dev -p db.port=7000 -p db.pool.size=9":
        "tests/test_config_nested.py::test_dotted_names_override_nested_fields_and_keep_the_rest",
    "batchcli exec sync -c config_dev -p db.hots=x":
        "tests/test_config_nested.py::test_unknown_nested_name_suggests_the_real_one",
    "batchcli list":
        "tests/test_installed.py::test_list_shows_each_job_with_module_package_and_description",
    "batchcli exec squares -c config_dev":
        "tests/test_installed.py::test_exec_an_installed_job_in_a_real_process",
    "batchcli exec my_package.squares":
        "tests/test_installed.py::test_exec_takes_a_module_name",
    "batchcli exec myjob/ -c config_prod -p executor=dask -p dask_address=tcp://SCHEDULER_HOST:8786":
        "tests/test_readme.py::test_the_dask_cluster_recipe_runs_as_shown",
    # The same form on the suite's `ray start --head` (a directory project, a configuration, ray_address).
    "batchcli exec myjob/ -c config_prod -p executor=ray -p ray_address=HEAD_HOST:6379":
        "tests/test_ray.py::test_directory_project_is_shipped_through_runtime_env",
    "batchcli exec PATH -p k=v -c config_dev":
        "tests/test_config_nested.py::test_dotted_names_override_nested_fields_and_keep_the_rest",
    "batchcli resume":
        "tests/test_resume.py::test_a_crashed_run_resumes_in_process_and_a_finished_one_is_left_alone",
    "batchcli exec myjob/ -c config_prod --shard auto/8 --group nightly-2024-05-01":
        "tests/test_shards.py::test_job_completion_index_picks_the_shard",
    "batchcli show batchcli_outputs/nightly": "tests/test_shards.py::test_show_runs_and_retry_on_a_group",
    "batchcli retry batchcli_outputs/nightly": "tests/test_shards.py::test_show_runs_and_retry_on_a_group",
    "batchcli retry batchcli_outputs/nightly --shard 1/3": "tests/test_shards.py::test_show_runs_and_retry_on_a_group",
    "batchcli results batchcli_outputs/nightly":
        "tests/test_group_results.py::test_a_group_split_by_position_reads_back_in_source_order",
    # A live run without a terminal, a free port and a local HTTP server: docs/unattended.md.
    "batchcli exec PATH --log-format json -p metrics_port=9464 -p notify_url=http://127.0.0.1:8080/batch":
        "tests/test_unattended.py::test_metrics_json_logs_notifications_and_a_stale_socket",
    "batchcli exec PATH -p metrics_port=9464":
        "tests/test_unattended.py::test_metrics_json_logs_notifications_and_a_stale_socket",
    "batchcli exec PATH -p notify_url=http://127.0.0.1:8080/batch":
        "tests/test_unattended.py::test_metrics_json_logs_notifications_and_a_stale_socket",
    "batchcli ctl RUN_DIR stats":
        "tests/test_unattended.py::test_watch_and_ctl_steer_a_run_that_has_no_terminal",
    "batchcli ctl RUN_DIR pause":
        "tests/test_unattended.py::test_watch_and_ctl_steer_a_run_that_has_no_terminal",
    "batchcli ctl RUN_DIR resume":
        "tests/test_unattended.py::test_watch_and_ctl_steer_a_run_that_has_no_terminal",
    "batchcli ctl RUN_DIR set concurrency=5":
        "tests/test_unattended.py::test_watch_and_ctl_steer_a_run_that_has_no_terminal",
    "batchcli ctl RUN_DIR set rate_limit=2":
        "tests/test_unattended.py::test_watch_and_ctl_steer_a_run_that_has_no_terminal",
    "batchcli ctl RUN_DIR set rate_limit=none":
        "tests/test_unattended.py::test_watch_and_ctl_steer_a_run_that_has_no_terminal",
    "batchcli ctl RUN_DIR retry-failed":
        "tests/test_unattended.py::test_watch_and_ctl_steer_a_run_that_has_no_terminal",
    "batchcli ctl RUN_DIR stop":
        "tests/test_unattended.py::test_watch_and_ctl_steer_a_run_that_has_no_terminal",
    "batchcli attach RUN_DIR":
        "tests/test_attach.py::test_attach_to_a_headless_run_awaits_on_it_resumes_it_survives_a_killed_client_and_stops_it",
}

# Shell lines that are not batchcli commands, with what runs each (a test, or why none does).
DASK_RECIPE = "tests/test_readme.py::test_the_dask_cluster_recipe_runs_as_shown"
OTHER_COMMANDS = {
    "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/pytest":
        ".ci/run runs it in a fresh virtualenv (test_the_setup_commands_stay_as_ci_quotes_them keeps them equal)",
    "pytest nightly_sync": "tests/test_init.py::test_the_generated_test_passes_under_pytest",
    "export BATCHCLI_DB__PASSWORD=...": "tests/test_config_nested.py::test_nested_fields_come_from_the_environment",
    "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES=0 dask scheduler --port 8786": DASK_RECIPE,
    "dask worker tcp://SCHEDULER_HOST:8786 --nthreads 1": DASK_RECIPE,
    "ray start --head --port 6379":
        "tests/conftest.py's ray_head runs it (with --port=0, a free port) for the Ray tests",
    "ray start --address HEAD_HOST:6379":
        "not run by the suite: it joins a second machine to the head",
    "python benchmarks/bench.py": "not run by the suite: it takes minutes and measures the machine, not the code",
    "python benchmarks/bench.py overhead": "not run by the suite: it measures the machine, not the code",
    "pip install -e '.[bench]'": "not run by the suite (it installs from the package index); "
        "test_the_bench_extra_has_what_the_benchmark_imports checks the extra",
}

# A job with the param and the secret that docs/configuration.md's `job.py` lines use.
JOB_PY = '''
from batchcli import Param, Secret, Service, Source, inject

@inject
class Numbers(Source[int]):
    def __init__(self, count: Param[int] = 1) -> None:
        self.count = count

    def __iter__(self):
        return iter(range(self.count))

@inject
class Check(Service[int]):
    def __init__(self, api_token: Param[Secret | None] = None) -> None:
        self.api_token = api_token

    def process(self, item: int) -> None:
        pass
'''


def strip_comment(line: str) -> str:
    return re.sub(r"\s+#.*$", "", line).strip()


def page_commands(text: str) -> list[str]:
    """Every `batchcli ...` command a page shows, in shell blocks and inline code, comments dropped."""
    commands = []
    for language, block in FENCE.findall(text):
        if language in NOT_SHELL:
            continue
        for line in block.splitlines():
            match = SHELL_COMMAND.search(strip_comment(line))
            if match:
                commands.append(f"{match.group(1)}batchcli {match.group(2)}".strip())
    prose = FENCE.sub("", text)
    commands += [" ".join(strip_comment(m).split()) for m in INLINE_COMMAND.findall(prose)]
    return commands


def shown_commands() -> list[str]:
    """Every distinct command shown in README.md and docs/*.md, in the order they first appear."""
    seen: dict[str, None] = {}
    for page in PAGES:
        for command in page_commands(page.read_text(encoding="utf-8")):
            seen.setdefault(command, None)
    return list(seen)


def is_synopsis(command: str) -> bool:
    return "[" in command


SYNOPSES = [c for c in shown_commands() if is_synopsis(c)]
RUNNABLE = [c for c in shown_commands() if not is_synopsis(c) and c not in COVERED_ELSEWHERE]


def readme_commands() -> list[str]:
    """Every line of a README code block that runs batchcli on a shipped example, comments dropped."""
    return [c.removeprefix("batchcli ") for c in page_commands(README) if c.startswith("batchcli exec examples/")]


def test_the_readme_shows_commands_for_both_examples() -> None:
    """The README keeps runnable commands for both shipped examples."""
    commands = readme_commands()
    assert any("examples/quickstart.py" in c for c in commands)
    assert any("examples/reindex" in c for c in commands)


def test_every_allow_listed_command_is_shown_and_its_test_exists() -> None:
    """Each command covered elsewhere is still shown in a page, and the test named for it exists."""
    shown = set(shown_commands())
    for command, test in COVERED_ELSEWHERE.items():
        assert command in shown, f"{command!r} is no longer shown in README.md or docs/: drop it from COVERED_ELSEWHERE"
        path, name = test.split("::")
        source = (ROOT / path).read_text(encoding="utf-8")
        assert re.search(rf"^def {name}\(", source, flags=re.M), f"{test} (named for {command!r}) does not exist"


def other_commands() -> list[str]:
    """Every line of a bash block in README.md or docs/ that is not a batchcli command, comments dropped.

    Only blocks marked as shell count: an unmarked block may be a diagram (docs/architecture.md has several).
    """
    lines: dict[str, None] = {}
    for page in PAGES:
        for language, block in FENCE.findall(page.read_text(encoding="utf-8")):
            if language in ("bash", "sh", "shell", "console"):
                for line in map(strip_comment, block.splitlines()):
                    if line and not SHELL_COMMAND.search(line):
                        lines.setdefault(line, None)
    return list(lines)


def test_every_other_shell_line_says_what_runs_it() -> None:
    """A shell line that is not a batchcli command is listed with the test that runs it, or why none does."""
    shown = other_commands()
    for line in shown:
        assert line in OTHER_COMMANDS, f"{line!r} is shown in a page: run it in a test and list it in OTHER_COMMANDS"
    for line, covered_by in OTHER_COMMANDS.items():
        assert line in shown, f"{line!r} is no longer shown in README.md or docs/: drop it from OTHER_COMMANDS"
        if "::" in covered_by:
            path, name = covered_by.split("::")
            source = (ROOT / path).read_text(encoding="utf-8")
            assert re.search(rf"^def {name}\(", source, flags=re.M), f"{covered_by} (named for {line!r}) does not exist"


def test_the_pages_show_the_everyday_commands() -> None:
    """The collector finds the commands the pages are known to show, so a broken pattern cannot hide them all."""
    shown = shown_commands()
    for command in ("batchcli runs", "batchcli show RUN_DIR", "batchcli init nightly_sync", "batchcli --install-completion"):
        assert command in shown
    assert len(SYNOPSES) >= 6 and len(RUNNABLE) >= 12


def workspace(tmp_path: Path, command: str) -> dict[str, str]:
    """Prepare the current directory (tmp_path) for one shown command; return its placeholders' values."""
    for folder in ("examples", "benchmarks"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "job.py").write_text(JOB_PY)
    values = {"PATH": "examples/reindex", "NAME": "nightly_sync", "OUTPUT_DIR": "batchcli_outputs"}
    if "RUN_DIR" in command or command.startswith("batchcli runs"):
        # A finished run with failures, in the default output directory, so `runs` lists it and `retry` has work.
        args = ["exec", "examples/quickstart.py", "-p", "count=100", "-p", "failure_rate=0", "-p", "malformed_every=10"]
        result = CliRunner().invoke(app, [*args, "-p", "backoff_s=0"], catch_exceptions=False)
        assert result.exit_code == 1, result.output
        run_dir = newest_run(tmp_path / "batchcli_outputs")
        assert run_dir is not None
        values["RUN_DIR"] = str(run_dir)
    if command.startswith("batchcli exec NAME") or command.startswith("batchcli exec nightly_sync"):
        result = CliRunner().invoke(app, ["init", "nightly_sync"], catch_exceptions=False)
        assert result.exit_code == 0, result.output
    return values


def fill(command: str, values: dict[str, str]) -> str:
    return re.sub(r"\b(RUN_DIR|OUTPUT_DIR|PATH|NAME)\b", lambda m: values.get(m.group(1), m.group(1)), command)


@pytest.mark.parametrize("command", RUNNABLE)
def test_readme_command_runs(command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A command shown in README.md or docs/ runs as shown, against real runs, and exits as that command should."""
    values = workspace(tmp_path, command)
    words = shlex.split(fill(command, values))
    env = {}
    while "=" in words[0]:
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    assert words.pop(0) == "batchcli"
    if words == ["--install-completion"]:
        # Typer finds the shell from the parent process: run under bash, into a home of our own.
        shell = f"{shlex.quote(sys.executable)} -m batchcli --install-completion; exit $?"
        proc = subprocess.run(
            ["bash", "-c", shell], capture_output=True, text=True, timeout=60, env=subprocess_env(HOME=str(tmp_path))
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "batchcli" in (tmp_path / ".bash_completions" / "batchcli.sh").read_text()
        return
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    subcommand = words[0]
    if subcommand in ("exec", "retry") and "--help" not in words:
        words += ["-d", str(tmp_path / "out"), "-p", "backoff_s=0"]  # keep runs apart from RUN_DIR's; no waiting
    result = CliRunner().invoke(app, words, catch_exceptions=False)
    assert "Traceback" not in result.output
    if subcommand == "resume":
        # RUN_DIR finished: resuming it does nothing, and says how to retry its failures instead.
        assert result.exit_code == 0, result.output
        assert "nothing to resume" in result.output and "batchcli retry" in result.output
    elif subcommand == "retry":
        # RUN_DIR's malformed records fail again, and a run that had failures exits 1.
        assert result.exit_code == 1, result.output
    elif "quickstart" in command:
        # The quick start drops connections at random: a rare item can exhaust its retries (exit 1).
        assert result.exit_code in (0, 1), result.output
    else:
        assert result.exit_code == 0, result.output
    if subcommand == "runs":
        assert Path(values["RUN_DIR"]).name in " ".join(result.output.split())
    if subcommand == "show":
        assert "ValueError" in result.output
    if "BATCHCLI_COUNT=5" in command:
        run_dir = newest_run(tmp_path / "out")
        assert run_dir is not None
        assert '"total": 6' in (run_dir / "summary.json").read_text()  # -p wins over the variable


@pytest.mark.parametrize("synopsis", SYNOPSES)
def test_a_synopsis_matches_the_commands_help(synopsis: str) -> None:
    """A synopsis shown in a page names a real command, and each of its options is in that command's --help."""
    words = synopsis.split()
    subcommand = words[1]
    result = CliRunner().invoke(app, [subcommand, "--help"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    # -vv is -v given twice: the help shows -v.
    options = {re.sub(r"^-(\w)\1+$", r"-\1", o) for o in re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", synopsis)}
    assert options, synopsis
    for option in options:
        assert re.search(rf"(?<![\w-]){re.escape(option)}\b", result.output), f"{option} of {synopsis!r} is not in the help"
    usage = " ".join(result.output.split())
    for argument in re.findall(r"\b(PATH|RUN_DIR|NAME)\b", " ".join(words[:3])):
        # The usage line names an argument as the pages do (cli/usageline.py: RUN_DIR, not typer's {run_dir}).
        assert argument in usage, f"{argument} of {synopsis!r} is not in: {usage[:200]}"


LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
EXTERNAL = re.compile(r"\b(?:https?|ftp|mailto):|(?<![\w/])//\w|\bwww\.", flags=re.I)


def slug(heading: str) -> str:
    """The anchor a Markdown renderer gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    return {slug(h) for h in re.findall(r"^#+\s+(.*)$", text, flags=re.M)}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_page_never_links_outside_the_repository(page: Path) -> None:
    """A page holds no URL: every link and picture points at a file of this repository."""
    text = page.read_text(encoding="utf-8")
    prose = FENCE.sub("", text)
    assert not EXTERNAL.findall(prose), f"{page.name} links outside the repository: {EXTERNAL.findall(prose)}"
    for target in LINK.findall(prose):
        assert not re.match(r"^[a-z][a-z0-9+.-]*:", target, flags=re.I), f"{page.name} links to {target!r}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    """Every relative link of a page names a file of the repository, and its #anchor a heading of that file."""
    for target in LINK.findall(FENCE.sub("", page.read_text(encoding="utf-8"))):
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.is_file() and ROOT in linked.parents, f"{page.name}: {target!r} is not a file of the repository"
        if anchor:
            assert anchor in anchors(linked), f"{page.name}: {target!r} has no heading #{anchor} in {linked.name}"


def test_the_readme_links_every_docs_page() -> None:
    """Each page under docs/ is reachable from the README."""
    for page in PAGES[1:]:
        assert f"(docs/{page.name}" in README, f"the README does not link docs/{page.name}"


def test_the_screenshots_stay_referenced() -> None:
    """The three screenshots in assets/ are shown in the README or a docs page."""
    text = "".join(page.read_text(encoding="utf-8") for page in PAGES)
    for picture in ("live-display.svg", "pause-shell.svg", "show-report.svg"):
        assert f"assets/{picture})" in text


def test_the_setup_commands_stay_as_ci_quotes_them() -> None:
    """The README keeps both setup commands, and .ci/run quotes the second one."""
    first = "python3 -m venv .venv && .venv/bin/pip install . && .venv/bin/batchcli exec examples/quickstart.py -p count=200"
    second = "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/pytest"
    assert first in README and second in README
    assert f"# README: {second}" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_modules_named_in_the_docs_exist() -> None:
    """A `batchcli/...` path or a `from batchcli... import` a page shows names a module of the package as laid out now."""
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for path in re.findall(r"`(batchcli/[\w/]+(?:\.py)?)`", text):
            assert (ROOT / path).exists(), f"{page.name} names {path}, which does not exist"
        for dotted in re.findall(r"^\s*from (batchcli(?:\.\w+)*) import", text, flags=re.M):
            module = ROOT / Path(*dotted.split("."))
            assert module.with_suffix(".py").is_file() or (module / "__init__.py").is_file(), (
                f"{page.name} imports {dotted}, which is no module of the package"
            )


def test_the_entry_point_group_shown_is_the_one_batchcli_reads() -> None:
    """The `batchcli.jobs` group docs/projects.md tells packages to use is the one `batchcli list` names."""
    groups = set(re.findall(r'\[project\.entry-points\."([\w.]+)"\]', (ROOT / "docs" / "projects.md").read_text()))
    assert groups == {"batchcli.jobs"}
    result = CliRunner().invoke(app, ["list"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert '[project.entry-points."batchcli.jobs"]' in result.output


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_dask_cluster_recipe_runs_as_shown(tmp_path: Path, run_batchcli: Any) -> None:
    """docs/executors.md's three cluster commands (scheduler, worker, exec with dask_address) run a project as shown."""
    pytest.importorskip("distributed")
    from distributed import Client

    page = (ROOT / "docs" / "executors.md").read_text(encoding="utf-8")
    scheduler, worker, job = (
        strip_comment(line)
        for line in (
            next(l for l in page.splitlines() if " dask scheduler " in l),
            next(l for l in page.splitlines() if l.startswith("dask worker ")),
            next(l for l in page.splitlines() if "dask_address=tcp://SCHEDULER_HOST" in l),
        )
    )
    port = str(free_port())
    here = {"8786": port, "SCHEDULER_HOST": "127.0.0.1"}

    def words(line: str) -> list[str]:
        return shlex.split(re.sub(r"\b(8786|SCHEDULER_HOST)\b", lambda m: here[m.group(1)], line))

    shutil.copytree(ROOT / "examples" / "reindex", tmp_path / "myjob", ignore=shutil.ignore_patterns("__pycache__"))
    started = []
    try:
        for line in (scheduler, worker):
            env_words = words(line)
            env = dict(w.split("=", 1) for w in env_words if re.match(r"^[A-Z_]+=", w))
            command = [w for w in env_words if not re.match(r"^[A-Z_]+=", w)]
            assert command[0] == "dask"
            started.append(subprocess.Popen(
                [sys.executable, "-m", "dask", *command[1:]],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=subprocess_env(**env),
            ))  # fmt: skip
        with Client(f"tcp://127.0.0.1:{port}", timeout=60) as client:
            client.wait_for_workers(1, timeout=120)
        args = words(job)
        assert args[0] == "batchcli"
        outcome = run_batchcli(*args[1:], "-d", str(tmp_path / "out"), timeout=240)
        assert outcome.exit_code == 0, outcome.output
        assert outcome.summary["succeeded"] == outcome.summary["total"] > 0
    finally:
        for process in reversed(started):
            process.terminate()
            process.wait(timeout=60)


def test_the_bench_extra_has_what_the_benchmark_imports() -> None:
    """docs/performance.md installs the bench extra for the API scenarios: it must name what bench.py imports there."""
    import tomllib

    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["bench"]
    names = {re.split(r"[<>=\[]", requirement)[0] for requirement in extra}
    bench = (ROOT / "benchmarks" / "bench.py").read_text()
    for name in ("httpx", "aiometer"):
        assert name in names and f"import {name}" in bench, (name, extra)
