"""Bad input gets one short message naming the culprit and the fix, exit code 2, and no Python traceback."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

PROJECTS = Path(__file__).resolve().parent / "projects"
BATCHFRAME = PROJECTS / "batchframe_style"
TYPED = PROJECTS / "typed_params" / "typed_params_job.py"
RETRIES = PROJECTS / "retries" / "retries_job.py"
REQUIRED = ("-p", "count=2", "-p", "target=out/here", "-p", "since=2024-01-31", "-p", "color=red")


def rejected(result) -> str:
    """The output of a run batchcli refused to start, after the checks every refusal must pass."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "Error:" in result.output
    assert result.run_dir is None  # refused before a run directory was made
    return " ".join(result.output.split())  # undo the console's line wrapping


def test_param_without_equals(cli) -> None:
    """-p NAME without =VALUE names the pair and shows the NAME=VALUE form."""
    out = rejected(cli("exec", RETRIES, "-d", "out", "-p", "max_retries"))
    assert "'max_retries'" in out
    assert "-p max_retries=VALUE" in out


def test_a_param_given_with_a_space_instead_of_equals_shows_the_equals_form(cli) -> None:
    """-p NAME VALUE (a form Batchframe's README shows) was click's "Got unexpected extra argument(s) (VALUE)"."""
    result = cli("exec", RETRIES, "-d", "out", "-p", "backoff_s=0", "-p", "max_retries", "2")
    out = " ".join(result.output.replace("│", " ").split())  # click's error box, wrapped
    assert result.exit_code == 2 and result.run_dir is None and "Traceback" not in out, result.output
    assert "-p max_retries 2: a param's name and value go in one word, joined by '=': -p max_retries=2" in out
    other = cli("exec", RETRIES, "stray", "-d", "out")  # any other extra argument keeps click's own message
    assert other.exit_code == 2 and "Got unexpected extra argument(s) (stray)" in other.output


def test_value_that_does_not_cast(cli) -> None:
    """A value that does not cast names the param, the type, the value given and an example."""
    out = rejected(cli("exec", TYPED, "-d", "out", "-p", "count=lots", *REQUIRED[2:]))
    assert "Param 'count' expects int, got 'lots'" in out
    assert "whole number" in out


def test_enum_value_that_does_not_cast_lists_allowed_values(cli) -> None:
    """An Enum param given an unknown value lists the values it allows."""
    out = rejected(cli("exec", TYPED, "-d", "out", *REQUIRED[:-1], "color=blue"))
    assert "'color'" in out and "'blue'" in out
    assert "'red'" in out and "'green'" in out


def test_literal_value_that_does_not_cast_lists_allowed_values(cli) -> None:
    """A Literal param given an unknown value lists the values it allows."""
    out = rejected(cli("exec", TYPED, "-d", "out", *REQUIRED, "-p", "mode=medium"))
    assert "'mode'" in out and "'medium'" in out
    assert "Allowed: 'fast', 'slow'" in out


def test_config_field_that_does_not_cast(cli) -> None:
    """A configuration field override is cast like a param, with the same message."""
    out = rejected(cli("exec", RETRIES, "-d", "out", "-p", "concurrency=many"))
    assert "Param 'concurrency' expects int, got 'many'" in out


@pytest.mark.parametrize("value", ["0", "20000", str(10**23)])
def test_config_value_out_of_range(cli, value: str) -> None:
    """A configuration value that casts but is invalid (concurrency=0) names the field and the value. Above
    10,000 too, the bound ctl and the pause shell apply: exec took any number, and ctl then refused to set the
    run's own concurrency again."""
    out = rejected(cli("exec", RETRIES, "-d", "out", "-p", f"concurrency={value}"))
    assert f"concurrency must be 1 to 10,000 items in flight at once, got {value}: e.g. concurrency=50." in out


def test_an_unpaired_double_quote_in_a_list_param_says_how_to_quote(cli) -> None:
    """A list element whose double quotes do not pair up is refused, with how to quote one that holds commas."""
    out = rejected(cli("exec", TYPED, "-d", "out", *REQUIRED, "-p", 'tags="Smith, J,Doe'))
    assert "Param 'tags' expects list of str, got '\"Smith, J,Doe': its double quotes do not pair up" in out
    assert "-p names='\"Smith, J\",Doe'" in out


def test_unknown_param_suggests_the_closest_name(cli) -> None:
    """A misspelt param is an error that suggests the valid name."""
    out = rejected(cli("exec", TYPED, "-d", "out", *REQUIRED, "-p", "colour=red"))
    assert "'colour'" in out
    assert "did you mean 'color'" in out


def test_unknown_config_field_suggests_the_closest_name(cli) -> None:
    """A misspelt configuration field is an error that suggests the field, and lists the valid names."""
    out = rejected(cli("exec", BATCHFRAME, "-c", "config_dev", "-d", "out", "-p", "max_retry=1"))
    assert "'max_retry'" in out
    assert "did you mean 'max_retries'" in out
    assert "Valid names:" in out and "fail_every" in out


def test_missing_required_params_are_listed_at_once(cli) -> None:
    """Every missing required param is named in one message, each with the -p to give."""
    out = rejected(cli("exec", TYPED, "-d", "out", "-p", "count=2"))
    for name in ("color", "since", "target"):
        assert f"-p {name}=..." in out
    assert "Missing required params" in out
    assert "count" not in out.split("Missing required params")[1]


def test_unknown_config_name_lists_the_existing_ones(cli) -> None:
    """An unknown -c name is named and the configurations that exist are listed (not the abstract base)."""
    out = rejected(cli("exec", BATCHFRAME, "-c", "config_stage", "-d", "out"))
    assert "'config_stage'" in out
    assert "config_dev, config_prod" in out
    assert "abstract_custom_config" not in out


def test_a_broken_configuration_module_stops_only_the_runs_that_pick_it(cli, tmp_path: Path) -> None:
    """Every module of config/ was imported whatever -c picked, so a mistake in the prod one stopped every dev run."""
    import shutil

    project = tmp_path / "bf"
    shutil.copytree(BATCHFRAME, project, ignore=shutil.ignore_patterns("__pycache__"))
    (project / "config" / "config_prod.py").write_text("this is not python\n")
    dev = cli("exec", project, "-c", "config_dev", "-d", "out", "-p", "count=3")
    assert dev.exit_code == 0, dev.output
    prod = cli("exec", project, "-c", "config_prod", "-d", "out")
    assert prod.exit_code == 2 and prod.run_dir is None, prod.output
    assert "config_prod.py' failed" in prod.output and "NameError: name 'this' is not defined" in prod.output


def test_path_that_does_not_exist(cli) -> None:
    """A path that does not exist is named, with what to give instead."""
    out = rejected(cli("exec", "no/such/job.py", "-d", "out"))
    assert "'no/such/job.py'" in out
    assert "does not exist" in out
    assert ".py file" in out


def test_project_without_a_source(cli) -> None:
    """A project with no Source says so and how to add one."""
    out = rejected(cli("exec", PROJECTS / "no_source" / "no_source_job.py", "-d", "out"))
    assert "no Source" in out
    assert "subclasses batchcli.Source" in out and "@inject" in out


def test_project_without_a_service(cli) -> None:
    """A project with no Service says so and how to add one."""
    out = rejected(cli("exec", PROJECTS / "no_service" / "no_service_job.py", "-d", "out"))
    assert "no Service" in out
    assert "subclasses batchcli.Service" in out and "@inject" in out


def test_two_sources_are_both_named(cli) -> None:
    """Two Source candidates are an error that names both and says to keep one."""
    out = rejected(cli("exec", PROJECTS / "two_sources" / "two_sources_job.py", "-d", "out"))
    assert "two_sources_job.Customers" in out
    assert "two_sources_job.Invoices" in out
    assert "Keep one" in out


def test_import_error_shows_the_users_traceback_only(cli) -> None:
    """An exception while importing the project shows the user's own frames (file and line), no batchcli frames."""
    result = cli("exec", PROJECTS / "import_error", "-d", "out")
    assert result.exit_code == 2
    assert result.run_dir is None
    out = result.output
    assert "Importing" in out and "failed" in out
    assert "Traceback (most recent call last)" in out  # the user's traceback, not batchcli's
    assert 'import_error/job.py", line 5' in out
    assert 'import_error/settings.py", line 10' in out
    assert "in load_endpoint" in out
    assert "FileNotFoundError" in out and "settings.toml" in out
    assert "batchcli/" not in out.replace(str(PROJECTS), "")
    assert "importlib" not in out


@pytest.mark.parametrize("value", ["abc", "10s", "0", "-1", "nan", "inf"])
def test_a_bad_progress_interval_is_a_usage_error(cli, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """BATCHCLI_PROGRESS_INTERVAL was read with float() when batchcli was imported: a word made every command (and
    run_job) fail with a traceback, and 0 or less printed thousands of progress lines a second."""
    monkeypatch.setenv("BATCHCLI_PROGRESS_INTERVAL", value)
    said = rejected(cli("exec", RETRIES, "-d", "out"))
    assert f"BATCHCLI_PROGRESS_INTERVAL='{value}' is not a number of seconds" in said
    from batchcli.testing import run_job

    assert run_job(RETRIES, output_dir="out").status == "finished"  # run_job reads no environment


def test_no_source_says_what_hid_it(cli, tmp_path: Path) -> None:
    """A Source decorated with kink's own @inject (as Batchframe's examples have it), or a directory project run by
    one of its files that does not import the Source: "The project has no Source" named neither cause."""
    job = tmp_path / "kinked.py"
    job.write_text(
        "from kink import inject\nfrom batchcli import Service, Source\n\n\n@inject\nclass Numbers(Source[int]):\n"
        "    def __iter__(self):\n        return iter(range(3))\n\n\n@inject\nclass Work(Service[int]):\n"
        "    def process(self, item: int) -> None:\n        pass\n"
    )
    said = rejected(cli("exec", job, "-d", "out"))
    assert "Numbers subclasses batchcli.Source but is not decorated with batchcli's inject" in said
    assert "from batchcli import inject" in said
    assert cli("init", "proj").exit_code == 0
    said = rejected(cli("exec", "proj/service.py", "-c", "config_dev", "-d", "out"))
    assert "Only service.py and what it imports were loaded" in said and "batchcli exec " in said and "proj" in said
    # A configuration module given for the project: the directory to give is the project's, not config/ (which has
    # only the configurations, and no Source either).
    said = rejected(cli("exec", "proj/config/config_dev.py", "-d", "out"))
    assert "Only config_dev.py and what it imports were loaded" in said
    assert said.rstrip(". ").endswith(f"batchcli exec {Path('proj').resolve()}"), said


def test_a_positional_only_param_is_a_project_error(cli, tmp_path: Path) -> None:
    """A Param before the / was listed by --help and then failed every run with an empty traceback blaming the user's
    constructor ("got some positional-only arguments passed as keyword arguments")."""
    job = tmp_path / "positional.py"
    job.write_text(
        "from batchcli import Param, Service, Source, inject\n\n\n@inject\nclass Numbers(Source[int]):\n"
        "    def __init__(self, n: Param[int] = 2, /) -> None:\n        self.n = n\n\n"
        "    def __iter__(self):\n        return iter(range(self.n))\n\n\n@inject\nclass Work(Service[int]):\n"
        "    def process(self, item: int) -> None:\n        pass\n"
    )
    said = rejected(cli("exec", job, "-d", "out", "-p", "n=3"))
    assert "Param 'n' of Numbers.__init__ is positional-only (before the /)" in said and "Move it after the /" in said


def test_one_param_with_two_defaults_is_a_project_error(cli, tmp_path: Path) -> None:
    """`limit` defaulting to 2 in the Source and 500 in the Service: --help showed 500, and the run took 2 items while
    the Service saw 500. Two types for one name were refused already; two defaults are too."""
    job = tmp_path / "two_defaults.py"
    job.write_text(
        "from batchcli import Param, Service, Source, inject\n\n\n@inject\nclass Pages(Source[int]):\n"
        "    def __init__(self, limit: Param[int] = 2) -> None:\n        self.limit = limit\n\n"
        "    def __iter__(self):\n        return iter(range(self.limit))\n\n\n@inject\nclass Fetch(Service[int]):\n"
        "    def __init__(self, limit: Param[int] = 500) -> None:\n        self.limit = limit\n\n"
        "    def process(self, item: int) -> None:\n        pass\n"
    )
    said = rejected(cli("exec", job, "-d", "out"))
    assert "Param 'limit' defaults to 500 in Fetch and to 2 in Pages; give both the same default." in said, said


def test_run_dir_read_in_a_constructor_says_where_to_read_it(cli, tmp_path: Path) -> None:
    """config.run_dir in a constructor (Batchframe's _current_run_output_dir pattern) said only "set by batchcli when a
    run starts", during a run."""
    job = tmp_path / "early.py"
    job.write_text(
        "from batchcli import Configuration, Service, Source, inject\n\n\n@inject\nclass Numbers(Source[int]):\n"
        "    def __iter__(self):\n        return iter(range(2))\n\n\n@inject\nclass Write(Service[int]):\n"
        "    def __init__(self, config: Configuration) -> None:\n        self.out = config.run_dir / 'out.txt'\n\n"
        "    def process(self, item: int) -> None:\n        pass\n"
    )
    result = cli("exec", job, "-d", "out")
    said = " ".join(result.output.split())
    assert result.exit_code == 2 and "read config.run_dir in setup() or process(), not in a constructor" in said, said


def test_a_project_named_like_an_imported_module_says_which_module_and_a_new_name(cli, tmp_path: Path) -> None:
    """A project file named json.py clashes with the standard library's json: the message named only the name; it
    says where the other module comes from and offers a name that does not clash."""
    project = tmp_path / "jobs" / "json.py"
    project.parent.mkdir()
    project.write_text((PROJECTS / "unattended" / "job.py").read_text())
    said = rejected(cli("exec", project, "-d", tmp_path / "out"))
    assert f"The project name 'json' ('{project}') clashes with the module 'json'" in said
    assert "json/__init__.py" in said and f"'{project.with_name('json_job.py')}'" in said


@pytest.mark.parametrize(
    ("service", "source", "said"),
    [
        ("    pass\n", "    def __iter__(self):\n        yield from range(3)\n",
         "Nothing defines no process(self, item): batchcli calls it for each item."),
        ("    async def process(self, item):\n        pass\n", "    pass\n",
         "Numbers yields no items: define __iter__ (a generator), __aiter__ (an async generator) or next()"),
    ],
)  # fmt: skip
def test_a_service_without_process_or_a_source_without_items_is_a_project_error(
    cli, tmp_path: Path, service: str, source: str, said: str
) -> None:
    """Both were accepted: every item failed with NotImplementedError (the circuit breaker tripping on them), or the
    run crashed with exit 3 after making its directory."""
    job = tmp_path / "job.py"
    job.write_text(
        "from batchcli import Service, Source, inject\n\n\n"
        f"@inject\nclass Numbers(Source[int]):\n{source}\n\n@inject\nclass Nothing(Service[int]):\n{service}"
    )
    assert said in rejected(cli("exec", job, "-d", "out"))


_NUMBERS_WITH = (
    "from batchcli import Service, Source, inject\n\n\n"
    "@inject\nclass Numbers(Source[int]):\n{source}\n\n"
    "@inject\nclass Nothing(Service[int]):\n    async def process(self, item):\n        return item\n"
)


@pytest.mark.parametrize(
    ("source", "said"),
    [
        ("    async def __iter__(self):\n        return iter([1])\n",
         "Numbers.__iter__ is async def, but __iter__ must give its items without awaiting. For a Source that awaits, "
         "rename it to __aiter__ and yield each item in it"),
        ("    async def __iter__(self):\n        yield 1\n", "Numbers.__iter__ is async def"),
        ("    async def __aiter__(self):\n        return [1]\n",
         "Numbers.__aiter__ is async def but does not yield, so it gives a coroutine, not the items. Make it an async "
         "generator"),
    ],
    ids=["async-iter-returning", "async-iter-generator", "async-aiter-returning"],
)  # fmt: skip
def test_a_source_iterating_with_the_wrong_kind_of_method_is_a_project_error(cli, tmp_path: Path, source: str, said: str) -> None:
    """An async __iter__ (meant as __aiter__) crashed the run as "batchcli failed" with an empty traceback and a
    "coroutine was never awaited" warning, after making its directory."""
    job = tmp_path / "job.py"
    job.write_text(_NUMBERS_WITH.format(source=source))
    assert said in rejected(cli("exec", job, "-d", "out"))


def test_a_source_whose_iter_returns_a_list_gives_the_lists_items(cli, tmp_path: Path) -> None:
    """__iter__ returning a list crashed the run ("iter() returned non-iterator"): its items are the Source's items."""
    job = tmp_path / "job.py"
    job.write_text(_NUMBERS_WITH.format(source="    def __iter__(self):\n        return [3, 4, 5]\n"))
    result = cli("exec", job, "-d", "out", "--no-shell")
    assert result.exit_code == 0, result.output
    assert (result.summary["succeeded"], result.summary["total"]) == (3, 3)
    assert cli("results", result.run_dir, "-f", "csv").output.split() == ["ordinal,result", "0,3", "1,4", "2,5"]


def test_a_source_whose_iter_returns_no_items_names_it_and_the_fix(cli, tmp_path: Path) -> None:
    """__iter__ returning an int logged "batchcli failed" with an empty traceback; the message names Numbers.__iter__
    and what to return, in a run and in a dry run."""
    job = tmp_path / "job.py"
    job.write_text(_NUMBERS_WITH.format(source="    def __iter__(self):\n        return 5\n"))
    fix = "Numbers.__iter__ returned 5 (int), which holds no items. Make it a generator (yield each item), or return the items"
    for result in (cli("exec", job, "-d", "out", "--no-shell"), cli("exec", job, "--dry-run")):
        said = " ".join(result.output.split())
        assert result.exit_code == 3 and fix in said, said
        assert "batchcli failed" not in said and "Traceback" not in said, said


def test_an_item_key_returning_none_stops_the_run_saying_so(cli, tmp_path: Path) -> None:
    """A forgotten return in item_key gave every item the key None: the first was processed, the rest counted as
    repeats and ended unprocessed, the run exited 0, and results listed five rows under one key."""
    job = tmp_path / "job.py"
    job.write_text(
        "from batchcli import Service, Source, inject\n\n\n"
        "@inject\nclass Numbers(Source[int]):\n    def __iter__(self):\n        yield from range(5)\n\n"
        "    def item_key(self, item):\n        str(item)\n\n\n"
        "@inject\nclass Nothing(Service[int]):\n    async def process(self, item):\n        return item\n"
    )
    result = cli("exec", job, "-d", "out")
    assert result.exit_code == 3, result.output
    assert "Numbers.item_key() returned None for the item 0: it must return the item's key, a str or an int unique " \
           "per item (is a return missing?)" in " ".join(result.output.split())  # fmt: skip
    assert result.summary["succeeded"] == 0


_JOB_TAIL = (
    "@inject\nclass Numbers(Source[int]):\n    def __iter__(self):\n        return iter(range(2))\n\n\n"
    "@inject\nclass Work(Service[int]):\n    def process(self, item: int) -> None:\n        pass\n"
)


@pytest.mark.parametrize(
    ("body", "code", "doing", "line"),
    [
        ("import sys\nsys.exit(0)\n\n", "0", "importing it", "sys.exit(0)"),  # read as every item done
        (
            "import argparse\nparser = argparse.ArgumentParser()\nparser.add_argument('--rows')\nargs = parser.parse_args()\n\n",
            "2", "importing it", "args = parser.parse_args()",
        ),
        (
            "import sys\n\n\nclass Exits:\n    def __init__(self) -> None:\n        sys.exit(4)\n\n\n",
            "4", "building it", "sys.exit(4)",
        ),
    ],
    ids=["exit-0-at-import", "argparse-at-import", "exit-4-in-a-constructor"],
)
def test_a_job_that_exits_while_it_loads_is_a_load_error(
    run_batchcli, tmp_path: Path, body: str, code: str, doing: str, line: str
) -> None:
    """sys.exit() in a job module, or in a constructor batchcli calls, ended batchcli silently with the job's own
    exit code: 0 read as a run that did every item, 4 a code batchcli does not use. It is a load error now. (The
    real CLI: argparse reads batchcli's own command line, as it would for a user.)"""
    job = tmp_path / "exits.py"
    tail = _JOB_TAIL.replace("class Work(Service[int]):\n", "class Work(Service[int]):\n    def __init__(self, e: Exits) -> None:\n        pass\n\n") if "Exits" in body else _JOB_TAIL
    job.write_text("from batchcli import Service, Source, inject\n" + body.replace("class Exits:", "@inject\nclass Exits:") + tail)
    result = run_batchcli("exec", job, "-d", "out", "--no-shell")
    said = " ".join(result.output.split())
    assert result.exit_code == 2, said
    assert not (tmp_path / "out").exists()
    assert f"called sys.exit({code})" in said and f"while batchcli was {doing}" in said, said
    assert line in said and 'if __name__ == "__main__":' in said, said


@pytest.mark.parametrize(
    ("value", "ran"),
    [("ConnectionError", True), ("None", False), ("(ConnectionError, 'TimeoutError')", False), ("'ConnectionError'", False)],
    ids=["one-class", "none", "a-name-not-a-class", "a-name-alone"],
)
def test_exceptions_to_retry_for_takes_one_class_and_names_itself_when_wrong(cli, tmp_path: Path, value: str, ran: bool) -> None:
    """exceptions_to_retry_for = ConnectionError (one class, not a tuple) or None ended the run with "TypeError: 'type'
    object is not iterable", exit 3, after making its directory, without naming the attribute. One class stands for
    itself now; anything else is refused before the run, naming the attribute and the bad value."""
    job = tmp_path / "retryfor.py"
    job.write_text(
        "from batchcli import Service, Source, inject\n\n\n@inject\nclass Numbers(Source[int]):\n"
        "    def __iter__(self):\n        return iter(range(3))\n\n\n@inject\nclass Flaky(Service[int]):\n"
        f"    exceptions_to_retry_for = {value}\n\n    def __init__(self) -> None:\n        self.seen: dict[int, int] = {{}}\n\n"
        "    def process(self, item: int) -> None:\n        self.seen[item] = self.seen.get(item, 0) + 1\n"
        "        if self.seen[item] == 1:\n            raise ConnectionResetError(f'reset on {item}')\n"
    )
    result = cli("exec", job, "-d", "out", "--no-shell", "-p", "backoff_s=0")
    if ran:  # ConnectionResetError is a ConnectionError: every item retried once, and done
        assert result.exit_code == 0, result.output
        assert result.summary["succeeded"] == 3
        return
    said = rejected(result)
    bad = {"None": "None", "'ConnectionError'": "'ConnectionError'"}.get(value, "'TimeoutError'")
    assert f"Flaky.exceptions_to_retry_for is {bad}, which is not an exception class" in said, said


def test_an_exceptions_to_retry_for_property_that_raises_shows_the_users_traceback(cli, tmp_path: Path) -> None:
    job = tmp_path / "retryprop.py"
    job.write_text(
        "from batchcli import Service, Source, inject\n\n\n@inject\nclass Numbers(Source[int]):\n"
        "    def __iter__(self):\n        return iter(range(3))\n\n\n@inject\nclass Work(Service[int]):\n"
        "    @property\n    def exceptions_to_retry_for(self):\n        return self.retry_on\n\n"
        "    def process(self, item: int) -> None:\n        pass\n"
    )
    result = cli("exec", job, "-d", "out", "--no-shell")
    said = " ".join(result.output.split())
    assert result.exit_code == 2 and result.run_dir is None, said
    assert "Reading Work.exceptions_to_retry_for failed" in said and "return self.retry_on" in said, said


@pytest.mark.parametrize("columns", ["0", "-3", "abc"])
def test_a_nonsense_columns_width_still_shows_every_message(run_batchcli, columns: str) -> None:
    """COLUMNS=0 made rich print nothing, so a refused command exited 2 without a word; any COLUMNS that is no width
    counts as unset."""
    refused = run_batchcli("exec", TYPED, "-d", "out", "-p", "count=lots", *REQUIRED[2:], COLUMNS=columns)
    said = " ".join(refused.output.split())
    assert refused.exit_code == 2 and "Error: Param 'count' expects int, got 'lots'" in said, refused.output
    finished = run_batchcli("exec", RETRIES, "-d", "out", "--no-shell", "-p", "backoff_s=0", COLUMNS=columns)
    assert "Finished" in finished.output, finished.output


def test_a_package_the_job_imports_that_is_not_installed_says_where_to_install_it(cli) -> None:
    """The traceback ended in "No module named ...", and left a new user to guess which Python batchcli runs in."""
    result = cli("exec", PROJECTS / "missing_module", "-d", "out")
    assert result.exit_code == 2 and result.run_dir is None, result.output
    out = " ".join(result.output.split())
    assert "ModuleNotFoundError: No module named 'batchcli_test_absent_package'" in out
    assert f"'batchcli_test_absent_package' is not installed in the Python that runs batchcli ({sys.executable})" in out
    assert f"{sys.executable} -m pip install batchcli_test_absent_package" in out
    assert "batchcli/" not in result.output.replace(str(PROJECTS), "")


def test_a_missing_module_of_a_package_is_a_name_to_check_not_a_package_to_install(cli, tmp_path: Path) -> None:
    """The package was found, its module was not: installing something would not help."""
    job = tmp_path / "job.py"
    job.write_text((PROJECTS / "missing_module" / "job.py").read_text().replace(
        "import batchcli_test_absent_package", "import json.batchcli_test_absent_module"
    ))  # fmt: skip
    result = cli("exec", job, "-d", "out")
    assert result.exit_code == 2 and result.run_dir is None, result.output
    out = " ".join(result.output.split())
    assert "'json.batchcli_test_absent_module' is not a module of 'json': check the name." in out, out
    assert "pip install" not in out
