"""Shards through the real CLI: N processes split one source, each an ordinary run in one group directory."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from conftest import PROJECTS, subprocess_env
from joblog import wait_for

from batchcli.journal.groups import shard_runs
from batchcli.journal.rundir import read_run

ORDINAL = PROJECTS / "shards" / "shard_job.py"
KEYED = PROJECTS / "shards" / "keyed_job.py"


def start(tmp_path: Path, *args: Any, name: str = "shard", **env: str) -> subprocess.Popen[bytes]:
    """``python -m batchcli ARGS`` in the background, no terminal, output to a file."""
    output = open(tmp_path / f"{name}.txt", "wb")
    return subprocess.Popen(
        [sys.executable, "-m", "batchcli", *[str(a) for a in args]],
        stdout=output,
        stderr=output,
        env=subprocess_env(**env),
    )


def ledger(logs: Path) -> Counter[int]:
    """How many times the service processed each item, over every process."""
    return Counter(int(line.split()[1]) for log in logs.glob("*.log") for line in log.read_text().splitlines())


def only_group(out: Path) -> Path:
    (group,) = [p.parent for p in out.glob("*/group.json")]
    return group


def done_keys(run_dir: Path) -> set[str]:
    conn = sqlite3.connect(run_dir / "journal.sqlite")
    try:
        return {key for (key,) in conn.execute("SELECT key FROM done_keys")}
    finally:
        conn.close()


def test_three_parallel_shards_process_the_whole_source_once(tmp_path: Path) -> None:
    """Three shards started together as processes (one with executor=process) cover the source with no item twice."""
    logs = tmp_path / "logs"
    logs.mkdir()
    common = (ORDINAL, "-p", f"log_dir={logs}", "-p", "count=40", "-d", tmp_path / "out")
    procs = [
        start(tmp_path, "exec", *common, "--shard", "0/3", name="s0"),
        start(tmp_path, "exec", *common, "--shard", "1/3", name="s1"),
        start(tmp_path, "exec", *common, "--shard", "2/3", "-p", "executor=process", "-p", "workers=1", name="s2"),
    ]
    assert [proc.wait(timeout=120) for proc in procs] == [0, 0, 0], [(tmp_path / f"s{i}.txt").read_text() for i in range(3)]
    assert ledger(logs) == Counter(range(40))
    group = only_group(tmp_path / "out")
    shards = shard_runs(group)
    assert sorted(shards) == [0, 1, 2]
    summary = json.loads((shards[2] / "summary.json").read_text())
    assert summary["shard"] == {"index": 2, "count": 3}
    assert summary["group"] == group.name
    assert (summary["succeeded"], summary["total"]) == (13, 13)
    # By position: shard 1 takes every third item from item 1 on.
    assert json.loads((group / "group.json").read_text())["shards"] == 3


def test_a_shard_killed_with_sigkill_shows_as_crashed_and_resumes(tmp_path: Path, cli: Any) -> None:
    """kill -9 one shard: show GROUP says crashed and missing, a second exec of it is refused while it runs, and
    exec again continues it (as a restarted Kubernetes pod would) with every item of its share done."""
    logs = tmp_path / "logs"
    logs.mkdir()
    out = tmp_path / "out"
    args = ("exec", ORDINAL, "-p", f"log_dir={logs}", "-p", "count=300", "-p", "sleep_s=0.01", "-p", "concurrency=1")
    proc = start(tmp_path, *args, "--shard", "1/3", "--no-shell", "-d", out)
    try:
        wait_for(lambda: sum(ledger(logs).values()) >= 10, "the shard to process some items")
        again = cli(*args, "--shard", "1/3", "-d", out)
        assert again.exit_code == 2
        assert "still running in another process" in again.output
        wait_for(lambda: out.exists() and any(read_run(d).succeeded for d in shard_runs(only_group(out)).values()),
                 "the journal to record some items")
    finally:
        proc.kill()
        proc.wait()
    group = only_group(out)
    shown = cli("show", group)
    assert shown.exit_code == 0
    assert "1 crashed" in shown.output and "2 missing" in shown.output
    listed = cli("runs", "-d", out)
    assert "crashed" in listed.output and "shard-1-of-3" in listed.output
    assert sum(ledger(logs).values()) < 100, "killed before the shard finished"
    resumed = cli(*args[:-2], "-p", "concurrency=10", "--shard", "1/3", "-d", out)
    assert resumed.exit_code == 0, resumed.output
    assert "continuing it" in resumed.output
    done = ledger(logs)
    assert set(done) == set(range(1, 300, 3))
    assert sum(done.values()) - 100 <= 20  # only what was in flight or after the last flush is redone
    info = read_run(group / "shard-1-of-3")
    assert (info.status, info.sessions, info.succeeded, info.total) == ("finished", 2, 100, 100)
    assert f"1/3 of group {group.name}" in " ".join(cli("show", group / "shard-1-of-3").output.split())


def test_show_runs_and_retry_on_a_group(tmp_path: Path, cli: Any) -> None:
    """show and runs aggregate a group's shards; retry GROUP reprocesses every shard's failures in one run, --shard one."""
    logs = tmp_path / "logs"
    logs.mkdir()
    args = ("exec", ORDINAL, "-p", f"log_dir={logs}", "-p", "count=30", "-p", "fail_every=7", "-p", "max_retries=0")
    for index in (0, 2):
        assert cli(*args, "--shard", f"{index}/3", "--group", "nightly").exit_code == 1
    group = tmp_path / "batchcli_outputs" / "nightly"
    shown = cli("show", "batchcli_outputs/nightly")  # the commands as docs/executors.md shows them
    assert "3 shards: 1 missing, 2 finished" in shown.output
    # Shard 0 has 0, 21 (items 0, 3, ...); shard 2 has 14 (2, 5, ...): 3 failures, 17 succeeded, of 20.
    assert "17 succeeded, 3 failed" in shown.output
    assert "3  ValueError: item N is a multiple of 7" in shown.output.replace("multiple of N", "multiple of 7")
    listed = cli("runs")
    assert "nightly (2/3 shards)" in listed.output
    assert "shard-0-of-3" in listed.output and "shard-2-of-3" in listed.output
    assert cli("retry", "batchcli_outputs/nightly", "--shard", "1/3").exit_code == 2  # shard 1 never ran
    resumed = cli("resume", "batchcli_outputs/nightly")  # resume takes one shard, and says which there are
    assert resumed.exit_code == 2, resumed.output
    said = " ".join(resumed.output.split())
    assert "is a group of shards" in said and "shard-0-of-3, shard-2-of-3" in said and "Traceback" not in said
    one = cli("retry", "batchcli_outputs/nightly", "--shard", "2/3")
    assert one.exit_code == 1
    assert "0 succeeded, 1 failed of 1" in one.output
    filtered = cli("retry", "batchcli_outputs/nightly", "--error-type", "KeyError")
    assert filtered.exit_code == 0 and "No failure of group 'nightly' matches" in " ".join(filtered.output.split())
    # The dry run and show --failures take the group as its retry does (they refused it as "not one run").
    dry = cli("retry", "batchcli_outputs/nightly", "--error-type", "ValueError", "--limit", "2", "--dry-run")
    said = " ".join(dry.output.split())
    assert dry.exit_code == 0 and "--limit 2: 2 of 3" in said and "Dry run: nothing was retried." in said, dry.output
    assert "shard-0-of-3 #0" in said and "shard-2-of-3" not in said, dry.output  # shard 0's two come first
    # With --shard the dry run lists that shard's failures only, as the retry takes them (it listed every shard's,
    # and took a --shard the retry refuses).
    dry_one = " ".join(cli("retry", "batchcli_outputs/nightly", "--shard", "2/3", "--dry-run").output.split())
    assert "Failures of batchcli_outputs/nightly/shard-2-of-3: 1 of 1" in dry_one, dry_one
    assert "Retry them with: batchcli retry batchcli_outputs/nightly --shard 2/3" in dry_one
    for bad in ("7/3", "1/3"):  # out of range; a shard that never ran
        refused = cli("retry", "batchcli_outputs/nightly", "--shard", bad, "--dry-run")
        assert refused.exit_code == 2 and "Traceback" not in refused.output, refused.output
    shown_failures = " ".join(cli("show", "batchcli_outputs/nightly", "--failures").output.split())
    assert "Failures of batchcli_outputs/nightly: 3 of 3" in shown_failures and "shard-2-of-3 #4" in shown_failures
    limited = cli("retry", "batchcli_outputs/nightly", "--error-type", "ValueError", "--limit", "2")
    assert "2 failure(s) match" in limited.output and "of 2." in limited.output  # at most 2 over the whole group
    everything = cli("retry", "batchcli_outputs/nightly", "-p", "fail_every=0")
    assert everything.exit_code == 0, everything.output
    assert "3 succeeded, 0 failed of 3" in everything.output
    assert sorted(ledger(logs)) == sorted(set(range(0, 30, 3)) | set(range(2, 30, 3)))
    retries = [p for p in group.iterdir() if p.is_dir() and not p.name.startswith("shard-")]
    assert len(retries) == 3  # every retry run lives in the group's directory
    assert "Retries" in cli("show", group).output


def test_runs_lists_a_group_while_one_of_its_shards_runs(tmp_path: Path, cli: Any) -> None:
    """The group's row asked for the rate now of the group directory as if it were a run, and `runs` failed (exit 2,
    "is a group of shards, not one run") for as long as any shard ran: when it is needed most."""
    logs = tmp_path / "logs"
    logs.mkdir()
    out = tmp_path / "batchcli_outputs"
    proc = start(tmp_path, "exec", ORDINAL, "-d", out, "-p", f"log_dir={logs}", "-p", "count=400", "-p", "sleep_s=0.05",
                 "-p", "concurrency=2", "--shard", "0/2", "--group", "nightly", "--no-shell")  # fmt: skip
    try:
        wait_for(lambda: sum(ledger(logs).values()) >= 4, "the shard to get going")
        listed = cli("runs", "-d", out)
        assert listed.exit_code == 0, listed.output
        rows = [" ".join(line.split()) for line in listed.output.splitlines()]
        assert any(r.startswith("nightly (1/2 shards) running") and r.endswith("/s now") for r in rows), listed.output
        assert any("shard-1-of-2 missing" in r for r in rows), listed.output
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_a_shard_given_other_params_than_its_group_is_refused(tmp_path: Path, cli: Any) -> None:
    """--group with -p count=200 beside a group started with count=100 was accepted, and the first shard's share of
    items 100-199 was never processed, with the group "finished". Settings (executor, workers) may differ."""
    logs = tmp_path / "logs"
    logs.mkdir()
    args = ("exec", ORDINAL, "-p", f"log_dir={logs}", "--group", "nightly")
    assert cli(*args, "-p", "count=10", "--shard", "0/2").exit_code == 0
    refused = cli(*args, "-p", "count=20", "--shard", "1/2")
    said = " ".join(refused.output.split())
    assert refused.exit_code == 2 and "count: 10 in the group, 20 here" in said and "Traceback" not in said, said
    assert not (tmp_path / "batchcli_outputs" / "nightly" / "shard-1-of-2").exists()
    other_settings = cli(*args, "-p", "count=10", "--shard", "1/2", "-p", "executor=process", "-p", "workers=1")
    assert other_settings.exit_code == 0, other_settings.output
    assert sorted(ledger(logs)) == list(range(10))


def test_a_shard_resumed_with_other_params_than_its_group_is_refused(tmp_path: Path, cli: Any) -> None:
    """``exec --shard`` refuses other params than the group's, but ``resume SHARD_DIR -p count=80`` took them: that
    shard alone ran its share of items 40-79, and the group read "finished". Settings (concurrency) may differ."""
    logs = tmp_path / "logs"
    logs.mkdir()
    out = tmp_path / "out"
    args = ("exec", ORDINAL, "-p", f"log_dir={logs}", "-p", "count=40", "-p", "sleep_s=0.05", "-p", "concurrency=1")
    proc = start(tmp_path, *args, "--shard", "0/2", "--group", "nightly", "--no-shell", "-d", out)
    shard_dir = out / "nightly" / "shard-0-of-2"
    try:
        wait_for(lambda: (shard_dir / "journal.sqlite").exists() and read_run(shard_dir).succeeded > 0,
                 "the journal to record some items")
    finally:
        proc.kill()
        proc.wait()
    refused = cli("resume", shard_dir, "-p", "count=80")
    said = " ".join(refused.output.split())
    assert refused.exit_code == 2 and "count: 40 in the group, 80 here" in said and "Traceback" not in said, said
    assert f"Resume it with the group's values (leave those -p out): batchcli resume {shard_dir}" in said, said
    assert max(ledger(logs)) < 40
    # shards too: it was taken, and silently did nothing (the shard kept its share)
    other_split = cli("resume", shard_dir, "-p", "shards=4")
    said = " ".join(other_split.output.split())
    assert other_split.exit_code == 2 and "Traceback" not in said, said
    assert "-p shards=4 splits a source only as exec starts it: a resume keeps the share of the source it started " \
        f"with, so it would not be used. Run it without -p shards: batchcli resume {shard_dir}" in said, said
    resumed = cli("resume", shard_dir, "-p", "concurrency=4")
    assert resumed.exit_code == 0, resumed.output
    assert set(ledger(logs)) == set(range(0, 40, 2))
    assert read_run(shard_dir).status == "finished"


def test_a_keyed_source_that_grows_keeps_each_item_in_its_shard(tmp_path: Path, cli: Any) -> None:
    """Shards of a keyed source go by the key's stable hash: after the source grows, every old item is in the same shard."""
    logs = tmp_path / "logs"
    logs.mkdir()
    for count in (30, 45):
        for index in range(3):
            run = cli("exec", KEYED, "-p", f"log_dir={logs}", "-p", f"count={count}", "--shard", f"{index}/3", "-d", "out")
            assert run.exit_code == 0, run.output
    small, large = sorted((tmp_path / "out").iterdir(), key=lambda g: sum(len(done_keys(d)) for d in shard_runs(g).values()))
    old = [done_keys(d) for d in shard_runs(small).values()]
    new = [done_keys(d) for d in shard_runs(large).values()]
    assert set().union(*old) == {f"n{n}" for n in range(30)}
    assert set().union(*new) == {f"n{n}" for n in range(45)}
    assert sum(map(len, new)) == 45  # no item in two shards
    for index in range(3):
        assert old[index] <= new[index]
        assert old[index], "every shard got some of the 30 items"


def test_job_completion_index_picks_the_shard(tmp_path: Path, cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """With JOB_COMPLETION_INDEX set, --shard auto/N and -p shards=N process that index's share, in the same group."""
    logs = tmp_path / "logs"
    logs.mkdir()
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "2")
    auto = cli("exec", ORDINAL, "-p", f"log_dir={logs}", "-p", "count=12", "--shard", "auto/4", "-d", "out")
    assert auto.exit_code == 0, auto.output
    assert sorted(ledger(logs)) == [2, 6, 10]
    assert "shard-2-of-4" in auto.output
    again = cli("exec", ORDINAL, "-p", f"log_dir={logs}", "-p", "count=12", "-p", "shards=4", "-d", "out")
    assert again.exit_code == 0
    assert "Shard 2/4 of group" in again.output and "finished already" in again.output
    assert sum(ledger(logs).values()) == 3


@pytest.mark.parametrize(
    ("shard", "fix"),
    [
        ("3/3", "the index must be from 0 to 2"),
        ("a/b", "is not I/N"),
        ("-1/2", "is not I/N"),
        # int() takes these, which no shard directory is named by: ran as shard 0/3, 10/20 and 1/3
        ("\u0966/3", "is not I/N"),
        ("1_0/20", "is not I/N"),
        ("+1/3", "is not I/N"),
        ("0/0", "must be at least 1"),
        ("auto/3", "JOB_COMPLETION_INDEX (a Kubernetes Indexed Job sets it), which is not set"),
        # A typo for 0/3: it ran, and every later `runs` of the directory listed three million shards, out of memory.
        ("0/3000000", "N, the number of shards, is at most 1,000"),
        ("0/9223372036854775808", "N, the number of shards, is at most 1,000"),  # a traceback past SQLite's integers
    ],
)
def test_a_bad_shard_is_a_clear_error(tmp_path: Path, cli: Any, monkeypatch: pytest.MonkeyPatch, shard: str, fix: str) -> None:
    """A malformed or out-of-range --shard exits 2 with the bad value and the right form, before any run directory."""
    monkeypatch.delenv("JOB_COMPLETION_INDEX", raising=False)
    result = cli("exec", ORDINAL, "-p", f"log_dir={tmp_path}", "--shard", shard, "-d", "out")
    assert result.exit_code == 2
    flat = " ".join(result.output.split())
    assert f"--shard {shard!r}" in flat or "auto/3" in flat
    assert fix in flat
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_group_named_like_a_file_in_the_output_directory_names_the_file(tmp_path: Path, cli: Any) -> None:
    """It said "Cannot make a run directory in output directory 'out': File exists", and to give another -d."""
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "nightly").write_text("notes\n")
    result = cli("exec", ORDINAL, "-p", f"log_dir={tmp_path}", "--shard", "0/2", "--group", "nightly", "-d", "out")
    assert result.exit_code == 2
    flat = " ".join(result.output.split())
    assert f"--group 'nightly': {str(Path('out') / 'nightly')!r} is a file, not a group's directory. Give another --group" in flat, flat
    assert (tmp_path / "out" / "nightly").read_text() == "notes\n"


def test_a_shard_of_other_code_with_the_groups_job_name_is_refused(tmp_path: Path, cli: Any, run_batchcli: Any) -> None:
    """Only the job's name was compared: jobs2/shard_job.py, other code, joined a group of jobs/shard_job.py and its
    results mixed with theirs. The same code checked out elsewhere still joins."""
    logs = tmp_path / "logs"
    logs.mkdir()
    same, other = tmp_path / "checkout" / ORDINAL.name, tmp_path / "jobs2" / ORDINAL.name
    same.parent.mkdir()
    other.parent.mkdir()
    same.write_text(ORDINAL.read_text())
    other.write_text(ORDINAL.read_text() + "\n# another job that happens to share the name\n")
    args = ("-p", f"log_dir={logs}", "-p", "count=6", "--group", "g1", "-d", "out")
    assert cli("exec", ORDINAL, "--shard", "0/3", *args).exit_code == 0
    refused = run_batchcli("exec", other, "--shard", "1/3", *args)  # a process each: a project name loads once
    assert refused.exit_code == 2, refused.output
    flat = " ".join(refused.output.split())
    assert f"Group 'g1' runs the job from {str(ORDINAL.resolve())!r}, and this shard's job, {str(other.resolve())!r}, is other code" in flat
    assert not (tmp_path / "out" / "g1" / "shard-1-of-3").exists()
    assert run_batchcli("exec", same, "--shard", "1/3", *args).exit_code == 0  # the same files elsewhere


def test_a_dry_run_of_a_shard_is_refused_as_its_run_would_be(tmp_path: Path, cli: Any) -> None:
    """exec --shard --dry-run skipped the group's checks, so it approved what the run then refused (exit 2)."""
    args = ("-p", f"log_dir={tmp_path}", "--group", "g", "-d", "out")
    assert cli("exec", ORDINAL, "-p", "count=10", "--shard", "0/3", *args).exit_code == 0
    other_n = cli("exec", ORDINAL, "-p", "count=10", "--shard", "1/4", "--dry-run", *args)
    assert other_n.exit_code == 2 and "was started with 3 shards" in " ".join(other_n.output.split()), other_n.output
    other_params = cli("exec", ORDINAL, "-p", "count=11", "--shard", "1/3", "--dry-run", *args)
    assert other_params.exit_code == 2, other_params.output
    assert "was started with other values (count: 10 in the group, 11 here)" in " ".join(other_params.output.split())
    fine = cli("exec", ORDINAL, "-p", "count=10", "--shard", "1/3", "--dry-run", *args)
    assert fine.exit_code == 0, fine.output
    assert sorted(p.name for p in (tmp_path / "out" / "g").iterdir()) == ["group.json", "shard-0-of-3"]


def test_a_keyed_shards_dry_run_says_why_it_counts_by_iterating(tmp_path: Path, cli: Any) -> None:
    """It said the Source "has no len()", which it has: a shard split by key takes a share no len() tells."""
    result = cli("exec", KEYED, "-p", f"log_dir={tmp_path}", "-p", "count=10", "--shard", "2/3", "--dry-run")
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert "3, counted by iterating the source (a shard split by key counts its share)" in flat, flat


def test_shards_beyond_the_most_a_group_may_have_are_refused(tmp_path: Path, cli: Any) -> None:
    """-p shards=N has the same bound as --shard I/N."""
    result = cli("exec", ORDINAL, "-p", f"log_dir={tmp_path}", "-p", "shards=1001", "-d", "out")
    assert result.exit_code == 2
    assert "shards must be from 1 to 1,000" in " ".join(result.output.split())
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_shard_start_leaves_the_draft_of_a_start_under_way_alone(tmp_path: Path, cli: Any) -> None:
    """Two starts of one shard at once: the second took the first's half-written journal for a killed start's and
    unlinked it, and both failed ("attempt to write a readonly database ... Check the disk"). Here the first start
    is held where it has its lock and its draft: the second is refused, and the draft is left as it was."""
    logs = tmp_path / "logs"
    logs.mkdir()
    args = ("exec", ORDINAL, "-p", f"log_dir={logs}", "-p", "count=4")
    assert cli(*args, "--shard", "1/2", "--group", "nightly").exit_code == 0  # makes the group
    shard = tmp_path / "batchcli_outputs" / "nightly" / "shard-0-of-2"
    shard.mkdir(mode=0o700)
    draft = shard / "journal.sqlite.new"
    draft.write_bytes(b"being written")
    holder = subprocess.Popen(  # the first start, between taking the run's lock and renaming its journal
        [sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDONLY); "
         "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)", str(shard)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        second = cli(*args, "--shard", "0/2", "--group", "nightly")
    finally:
        holder.kill()
        holder.wait()
    said = " ".join(second.output.split())
    assert second.exit_code == 2 and "was started by another process just now" in said, second.output
    assert "Check the disk" not in said and draft.read_bytes() == b"being written"
    assert cli(*args, "--shard", "0/2", "--group", "nightly").exit_code == 0  # the lock gone: a killed start's


def test_shards_of_one_group_must_agree_on_n(tmp_path: Path, cli: Any) -> None:
    """A shard whose N differs from its group's is refused (exit 2), naming both and the fix."""
    assert cli("exec", ORDINAL, "-p", f"log_dir={tmp_path}", "--shard", "0/3", "--group", "g", "-d", "out").exit_code == 0
    result = cli("exec", ORDINAL, "-p", f"log_dir={tmp_path}", "--shard", "1/4", "--group", "g", "-d", "out")
    assert result.exit_code == 2
    assert "Group 'g' was started with 3 shards, but this one says --shard 1/4" in result.output
    assert "Give --shard I/3" in result.output
    assert sorted(p.name for p in (tmp_path / "out" / "g").iterdir()) == ["group.json", "shard-0-of-3"]
    retry = cli("retry", tmp_path / "out" / "g", "--shard", "0/2")
    assert retry.exit_code == 2 and "has 3 shards, but --shard says 2" in retry.output


def test_async_sources_are_sharded_by_position_and_by_key(tmp_path: Path, cli: Any) -> None:
    """An async Source is split like a sync one: by position without item_key, by the key's hash with it."""
    logs = tmp_path / "logs"
    logs.mkdir()
    for index in range(2):
        run = cli("exec", PROJECTS / "shards" / "async_job.py", "-p", f"log_dir={logs}", "-p", "count=9",
                  "--shard", f"{index}/2", "-d", "out")  # fmt: skip
        assert run.exit_code == 0, run.output
        (summary,) = (tmp_path / "out").glob(f"*/shard-{index}-of-2/summary.json")
        assert json.loads(summary.read_text())["total"] == (5, 4)[index]  # a sized source: each shard's own length
    assert sorted(ledger(logs).elements()) == list(range(9))
    keyed_logs = tmp_path / "keyed"
    keyed_logs.mkdir()
    keyed = PROJECTS / "journal_keyed" / "keyed.py"
    codes = [
        cli("exec", keyed, "-p", f"log_dir={keyed_logs}", "-p", "count=12", "--shard", f"{index}/2", "-d", "out").exit_code
        for index in range(2)
    ]
    assert sorted(codes) == [0, 1]  # item-7 always fails, in whichever shard holds it
    lines = [line for log in keyed_logs.glob("*.log") for line in log.read_text().splitlines()]
    assert sorted(lines) == sorted(f"item-{n}" for n in range(12))


def test_a_dry_run_of_a_shard_shows_its_share_and_makes_no_group(tmp_path: Path, cli: Any) -> None:
    """exec --shard I/N --dry-run counts and lists this shard's items only, and creates no group or run directory."""
    logs = tmp_path / "logs"
    logs.mkdir()
    result = cli("exec", ORDINAL, "-p", f"log_dir={logs}", "-p", "count=12", "--shard", "1/4", "--dry-run", "-d", "out")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "shard 1/4 of group" in text
    assert "items 3 (len of the source)" in text
    assert not (tmp_path / "out").exists()
    assert ledger(logs) == Counter()  # nothing processed


@pytest.mark.parametrize("job", [ORDINAL, KEYED, PROJECTS / "shards" / "async_job.py"], ids=["by-position", "keyed", "async"])
def test_a_sampled_group_takes_the_items_one_sampled_run_takes(tmp_path: Path, cli: Any, job: Path) -> None:
    """--sample decides by where an item stands in the whole source: each shard decided by its own ordinals, so every
    shard took its 3rd, 7th ... items together, and a group's 10% sample was runs of N neighbouring items, not the
    items one run with the same seed takes."""
    whole, sharded = tmp_path / "whole", tmp_path / "sharded"
    whole.mkdir(), sharded.mkdir()
    sample = ("-p", "count=600", "--sample", "0.1", "--seed", "3")
    assert cli("exec", job, "-p", f"log_dir={whole}", *sample, "-d", "out").exit_code == 0
    totals = 0
    for index in range(3):
        run = cli("exec", job, "-p", f"log_dir={sharded}", *sample, "--shard", f"{index}/3", "-d", "out")
        assert run.exit_code == 0, run.output
        totals += int(run.output.split(" of ")[-1].split(".")[0])
    taken = ledger(whole)
    assert 30 < len(taken) < 90  # about a tenth
    assert ledger(sharded) == taken
    assert totals == len(taken)  # each shard's display counted its part of the sample up front
    # The same command again (a restarted pod): a keyed shard was refused, exit 2, "started as a trial (a 10% sample
    # (seed 3)), and this command runs it as a trial (a 10% sample (seed 3))": its journal's sample is by key.
    again = cli("exec", job, "-p", f"log_dir={sharded}", *sample, "--shard", "1/3", "-d", "out")
    assert again.exit_code == 0 and "finished already" in " ".join(again.output.split()), again.output
    assert ledger(sharded) == taken


def test_a_trial_shard_goes_on_as_it_was_started(tmp_path: Path, cli: Any) -> None:
    """`exec --shard` of a stopped trial shard ran its whole share (its --limit dropped; an incremental shard redid
    what it skipped), while runs still called it a trial; and a finished trial shard met by the full command said
    "nothing to do" without a word of the trial."""
    logs = tmp_path / "logs"
    logs.mkdir()
    base = (ORDINAL, "-p", f"log_dir={logs}", "-p", "count=400", "-p", "sleep_s=0.05", "-p", "concurrency=1",
            "--shard", "0/2", "--group", "t", "-d", tmp_path / "out")  # fmt: skip
    trial = (*base, "--limit", "30")
    first = start(tmp_path, "exec", *trial, name="first")
    try:
        wait_for(lambda: sum(ledger(logs).values()) >= 5, "a few items")
        first.send_signal(2)  # SIGINT: stopped, resumable
        assert first.wait(timeout=60) == 130
    finally:
        if first.poll() is None:
            first.kill()
    run_dir = tmp_path / "out" / "t" / "shard-0-of-2"
    assert read_run(run_dir).status == "stopped"
    whole = cli("exec", *base)  # no --limit
    said = " ".join(whole.output.split())
    assert whole.exit_code == 2, whole.output
    assert "was started as a trial (the first 30 items), and this command runs it for its whole share" in said
    assert f"batchcli resume {run_dir} (add --all" in said and "Traceback" not in said
    again = cli("exec", *trial)  # the same command: continues the trial
    assert again.exit_code == 0, again.output
    assert sorted(ledger(logs).elements()) == list(range(0, 60, 2))  # the share's first 30 items, each once
    finished = cli("exec", *trial)
    said = " ".join(finished.output.split())
    assert finished.exit_code == 0 and "finished already (30 succeeded, 0 failed)" in said
    assert f"It was a trial (the first 30 items); carry it on with: batchcli resume {run_dir} --all" in said


def test_a_group_named_as_a_run_directory_is_refused(tmp_path: Path, cli: Any) -> None:
    """--group naming an existing run's directory wrote group.json into it: results and retry then saw a group and
    no longer reached the run's own results and failures."""
    logs = tmp_path / "logs"
    logs.mkdir()
    run = cli("exec", ORDINAL, "-p", f"log_dir={logs}", "-p", "count=10", "-p", "fail_every=3", "-d", "out")
    assert run.exit_code == 1 and run.run_dir is not None
    refused = cli("exec", ORDINAL, "-p", f"log_dir={logs}", "-p", "count=10", "--shard", "0/2", "--group", run.run_dir.name, "-d", "out")
    said = " ".join(refused.output.split())
    assert refused.exit_code == 2, refused.output
    assert f"--group {run.run_dir.name!r}" in said and "is a run's directory, not a group's" in said
    assert sorted(p.name for p in run.run_dir.iterdir()) == ["batchcli.log", "failed.jsonl", "journal.sqlite", "summary.json"]


def test_error_type_on_a_group_takes_a_type_any_shard_recorded(tmp_path: Path, cli: Any) -> None:
    """`--error-type NAME` with a class name a failure was recorded with was checked against each shard alone: a
    shard that never recorded it refused the whole command (show and retry --dry-run), while the real retry of the
    same group took the failure."""
    job = PROJECTS / "shards" / "custom_error.py"
    for index in range(2):
        assert cli("exec", job, "--shard", f"{index}/2", "--group", "g", "-d", "out").exit_code == 1
    group = tmp_path / "out" / "g"
    for command in (("show", group, "--failures"), ("retry", group, "--dry-run")):
        listed = cli(*command, "--error-type", "Boom")
        said = " ".join(listed.output.split())
        assert listed.exit_code == 0, listed.output
        assert "matching --error-type Boom: 1 of 2" in said and "custom_error.Boom: zero" in said, said
    retried = cli("retry", group, "--error-type", "Boom")
    assert retried.exit_code == 1 and "1 failed of 1" in " ".join(retried.output.split()), retried.output
    none = cli("retry", group, "--error-type", "KeyError")  # a built-in no shard recorded: nothing matches
    assert none.exit_code == 0 and f"List its failures with: batchcli show {group} --failures" in " ".join(none.output.split())


def test_show_and_runs_say_a_group_of_trial_shards_is_a_trial(tmp_path: Path, cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A group whose shards ran --limit said "2 shards: 2 finished ... 6 of 6" with no word of the trial, in show
    and in the group's line of runs, though each shard's own line said it."""
    monkeypatch.setenv("COLUMNS", "200")
    logs = tmp_path / "logs"
    logs.mkdir()
    for index in range(2):
        assert cli("exec", ORDINAL, "-p", f"log_dir={logs}", "-p", "count=20", "--limit", "3", "--shard", f"{index}/2",
                   "--group", "t", "-d", "out").exit_code == 0  # fmt: skip
    shown = " ".join(cli("show", tmp_path / "out" / "t").output.split())
    assert "selection trial: the first 3 items, per shard" in shown, shown
    listed = cli("runs", "-d", "out").output.splitlines()
    assert "t (2/2 shards) (trial: the first 3 items, per shard)" in listed[1], listed


def test_skip_done_in_a_group_skips_what_its_shards_and_retries_did(tmp_path: Path, cli: Any) -> None:
    """--skip-done-in GROUP was refused as "not a run directory: it has no journal.sqlite", though `runs` lists the
    group as one line; it now takes every shard's run and the group's retries."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir(), second.mkdir()
    for index in range(2):
        cli("exec", KEYED, "-p", f"log_dir={first}", "-p", "count=20", "-p", "fail_every=7", "--shard", f"{index}/2",
            "--group", "g", "-d", "out")  # fmt: skip
    group = tmp_path / "out" / "g"
    assert cli("retry", group, "-p", "fail_every=0").exit_code == 0  # 0, 7 and 14 succeed in the group's retry
    grown = cli("exec", KEYED, "-p", f"log_dir={second}", "-p", "count=30", "--skip-done-in", group, "-d", "out")
    assert grown.exit_code == 0, grown.output
    assert "one of the 20 that succeeded in those 3 runs" in " ".join(grown.output.split())
    assert sorted(ledger(second).elements()) == list(range(20, 30))
    empty = tmp_path / "out" / "empty"
    empty.mkdir()
    (empty / "group.json").write_text((group / "group.json").read_text())
    refused = cli("exec", KEYED, "-p", f"log_dir={second}", "--skip-done-in", empty, "-d", "out")
    assert refused.exit_code == 2 and "is a group with no run yet" in " ".join(refused.output.split())
