"""Wiring through the real CLI: Batchframe-style projects, -c configurations, typed params, fresh containers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

PROJECTS = Path(__file__).resolve().parent / "projects"
BATCHFRAME = PROJECTS / "batchframe_style"
TYPED = PROJECTS / "typed_params" / "typed_params_job.py"
SHARED = PROJECTS / "shared_nothing" / "shared_nothing_job.py"

TYPED_REQUIRED = ("-p", "count=2", "-p", "target=out/here", "-p", "since=2024-01-31", "-p", "color=red")


def observed(run_dir: Path, name: str) -> dict:
    return json.loads((run_dir / name).read_text())


@pytest.mark.parametrize(
    ("config", "cls", "env", "max_retries", "concurrency"),
    [("config_dev", "CustomDevConfig", "DEV", 2, 10), ("config_prod", "CustomProdConfig", "PROD", 1, 3)],
)
def test_batchframe_project_runs_with_the_chosen_config(cli, config, cls, env, max_retries, concurrency) -> None:
    """A Batchframe project with renamed imports runs, and -c picks the config injected where the abstract base is asked for."""
    result = cli("exec", BATCHFRAME, "-c", config, "-d", "out")
    assert result.exit_code == 1, result.output
    seen = observed(result.run_dir, "observed.json")
    assert seen["config_class"] == cls
    assert seen["env"] == env
    assert seen["max_retries"] == max_retries
    assert seen["concurrency"] == concurrency
    assert seen["source_class"] == "TestSource"  # the Source parent resolved to the user's class
    assert seen["same_config"] is True  # one configuration instance per run, shared by every class
    summary = result.summary
    assert summary["configuration"] == cls
    assert (summary["succeeded"], summary["failed"], summary["total"]) == (7, 3, 10)


def test_batchframe_property_retry_set_retries_subclasses(cli) -> None:
    """exceptions_to_retry_for as a Batchframe property is honoured: a ValueError subclass is retried, a KeyError is not."""
    result = cli("exec", BATCHFRAME, "-c", "config_dev", "-d", "out")
    attempts = observed(result.run_dir, "observed.json")["attempts"]
    assert attempts["5"] == attempts["10"] == 3  # max_retries=2 in config_dev: 1 + 2 attempts
    assert attempts["7"] == 1
    assert all(attempts[str(n)] == 1 for n in (1, 2, 3, 4, 6, 8, 9))
    by_input = {f["input"]: f for f in result.failed}
    assert by_input[5]["error_type"] == "batchframe_style.service.Flaky"
    assert by_input[5]["attempts"] == 3
    assert by_input[7]["error_type"] == "KeyError"
    assert by_input[7]["attempts"] == 1


def test_batchframe_persist_failed_gets_exactly_the_failed_inputs(cli) -> None:
    """persist_failed is called once, at the end, with every input that finally failed and nothing else."""
    result = cli("exec", BATCHFRAME, "-c", "config_prod", "-d", "out")
    persisted = observed(result.run_dir, "persisted.json")
    assert persisted["calls"] == 1
    assert sorted(persisted["failed"]) == [5, 7, 10]


def test_config_field_and_source_param_overrides(cli) -> None:
    """-p sets a field of the chosen configuration (built-in or the project's own) and a Source param alike."""
    result = cli(
        "exec", BATCHFRAME, "-c", "config_dev", "-d", "out",
        "-p", "fail_every=4", "-p", "max_retries=0", "-p", "env=staging", "-p", "count=8",
    )
    seen = observed(result.run_dir, "observed.json")
    assert seen["env"] == "staging"
    assert seen["max_retries"] == 0
    assert set(seen["attempts"]) == {str(n) for n in range(1, 9)}
    assert sorted(f["input"] for f in result.failed) == [4, 7, 8]
    assert all(f["attempts"] == 1 for f in result.failed)
    assert result.summary["params"] == {"fail_every": 4, "max_retries": 0, "env": "staging", "count": 8}


def test_params_of_every_type_are_cast_into_constructors(cli) -> None:
    """Params of many types reach the constructors cast, including one of a helper class, and config fields too."""
    result = cli(
        "exec", TYPED, "-d", "out",
        "-p", "count=3", "-p", "dry_run=yes", "-p", "target=data/in.csv", "-p", "since=2024-01-31T12:00:00Z",
        "-p", "color=GREEN", "-p", "mode=slow", "-p", "limit=7", "-p", "price=19.99", "-p", "greeting=hi",
        "-p", "region=eu", "-p", "concurrency=4", "-p", "backoff_s=0.5",
    )
    assert result.exit_code == 0, result.output
    values = observed(result.run_dir, "values.json")
    assert values["count"] == [3, "int"]
    assert values["dry_run"] == [True, "bool"]
    assert values["target"][0] == "data/in.csv" and values["target"][1].endswith("Path")
    assert values["since"] == ["2024-01-31T12:00:00+00:00", "datetime"]
    assert values["color"] == ["GREEN", "Color"]
    assert values["mode"] == ["slow", "str"]
    assert values["limit"] == [7, "int"]
    assert values["price"] == ["19.99", "Decimal"]
    assert values["greeting"] == ["hi", "str"]  # a Param of a class that is neither Source nor Service
    assert values["config_class"][0] == "JobConfig"  # the only configuration, used without -c
    assert values["region"] == ["eu", "str"]
    assert values["concurrency"] == [4, "int"]
    assert values["backoff_s"] == [0.5, "float"]
    assert result.summary["succeeded"] == 3


def test_param_defaults_apply_when_not_given(cli) -> None:
    """Params and configuration fields that are not given keep their declared defaults."""
    result = cli("exec", TYPED, "-d", "out", *TYPED_REQUIRED)
    assert result.exit_code == 0, result.output
    values = observed(result.run_dir, "values.json")
    assert values["dry_run"] == [False, "bool"]
    assert values["mode"] == ["fast", "str"]
    assert values["limit"] == [None, "NoneType"]
    assert values["price"] == ["1.50", "Decimal"]
    assert values["greeting"] == ["hello", "str"]
    assert values["region"] == ["us", "str"]
    assert values["batch_size"] == [100, "int"]
    assert values["concurrency"] == [10, "int"]


def test_enum_by_value_and_optional_none(cli) -> None:
    """An Enum param accepts its value as well as its name, and an Optional param reads 'none' as None."""
    result = cli("exec", TYPED, "-d", "out", *TYPED_REQUIRED[:-1], "color=green", "-p", "limit=none")
    assert result.exit_code == 0, result.output
    values = observed(result.run_dir, "values.json")
    assert values["color"] == ["GREEN", "Color"]
    assert values["limit"] == [None, "NoneType"]


def test_two_runs_in_one_process_share_nothing(cli) -> None:
    """Each run gets a fresh container and freshly imported modules: no instance or module state carries over."""
    first = cli("exec", SHARED, "-d", "out")
    module_one = sys.modules["shared_nothing_job"]
    second = cli("exec", SHARED, "-d", "out")
    module_two = sys.modules["shared_nothing_job"]
    assert first.exit_code == second.exit_code == 0
    assert first.run_dir != second.run_dir
    one, two = observed(first.run_dir, "state.json"), observed(second.run_dir, "state.json")
    assert one["processed"] == two["processed"] == 4  # the module-level counter started from 0 again
    assert one["instances"] == two["instances"] == 1
    assert module_one is not module_two
    assert module_one.INSTANCES[0] is not module_two.INSTANCES[0]
    assert module_one.Numbers is not module_two.Numbers


def test_inject_forms_aliases_and_generic_annotations(cli) -> None:
    """@inject, @inject() and @inject(alias=...) all wire; Source[int] resolves to the user's Source; one instance per run."""
    result = cli("exec", PROJECTS / "inject_forms" / "inject_forms_job.py", "-d", "out")
    assert result.exit_code == 0, result.output
    wiring = observed(result.run_dir, "wiring.json")
    assert wiring == {"store": "MemoryStore", "source": "Numbers", "one_store": True, "stored": [0, 1, 2, 3]}


def test_config_chosen_by_class_name(cli) -> None:
    """-c also accepts a configuration's class name."""
    result = cli("exec", BATCHFRAME, "-c", "CustomProdConfig", "-d", "out")
    assert observed(result.run_dir, "observed.json")["config_class"] == "CustomProdConfig"


def test_a_list_element_in_double_quotes_keeps_its_commas(cli) -> None:
    """`-p tags='"Smith, J",Doe'` gives two tags, and the default holding a comma reaches the job whole: a comma inside
    an element used to split it, with no way to give one."""
    given = cli("exec", TYPED, "-d", "out", *TYPED_REQUIRED, "-p", 'tags="Smith, J",Doe')
    assert given.exit_code == 0, given.output
    assert observed(given.run_dir, "values.json")["tags"] == [["Smith, J", "Doe"], "list"]
    default = cli("exec", TYPED, "-d", "out", *TYPED_REQUIRED)
    assert observed(default.run_dir, "values.json")["tags"] == [["Smith, J", "plain"], "list"]
    shown = " ".join(cli("exec", TYPED, "--help").output.split())
    assert '"Smith, J",plain' in shown  # the default as it would be typed, quoted where it must be


def test_two_copies_of_a_job_in_a_project_are_named_as_two_sources(cli, tmp_path: Path) -> None:
    """A directory project holding a job and its copy (job.py, job_old.py), with an Enum param: the error said
    "Param 'color' is declared as <enum 'Color'> in Rows and as <enum 'Color'> in Rows", since each copy has its
    own Enum. The two Sources are named first now."""
    project = tmp_path / "proj"
    project.mkdir()
    job = (
        "import enum\n"
        "from batchcli import Param, Service, Source, inject\n"
        "class Color(enum.Enum):\n    RED = 'red'\n"
        "@inject\nclass Rows(Source[int]):\n"
        "    def __init__(self, color: Param[Color] = Color.RED) -> None:\n        self.color = color\n"
        "    def __iter__(self):\n        return iter(range(2))\n"
        "@inject\nclass Work(Service[int]):\n    async def process(self, item: int) -> None:\n        pass\n"
    )
    (project / "job.py").write_text(job)
    (project / "job_old.py").write_text(job)
    outcome = cli("exec", project)
    said = " ".join(outcome.output.split())
    assert outcome.exit_code != 0 and "The project has 2 Source classes: proj.job.Rows, proj.job_old.Rows" in said, said
    assert "declared as" not in said
