"""retry and resume at their edges: a group's --limit over inputs that could not be saved, -p shards given to a group's
retry, the run being retried moved away while the retry copies its inputs, and a resumed retry with an input it
already processed that no longer loads. Each did something surprising, found by an adversarial run."""

from __future__ import annotations

import re
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import PROJECTS

LOCKED = PROJECTS / "journal_retry" / "locked.py"
QUIET = ("--no-shell", "-p", "max_retries=0", "-p", "breaker_window=0")


def said(outcome) -> str:
    return " ".join(outcome.output.replace("│", " ").split())


def processed(ledger: Path) -> Counter[int]:
    return Counter(int(line) for line in ledger.read_text().split()) if ledger.exists() else Counter()


def group_of_two(cli, tmp_path: Path) -> Path:
    """Group G of two shards of 60 items, started with --shard I/2: 40 fail, 6 of them unpicklable."""
    for index in (0, 1):
        ran = cli("exec", LOCKED, "--shard", f"{index}/2", "--group", "G", "-d", "out", *QUIET,
                  "-p", f"ledger={tmp_path / 'first'}")  # fmt: skip
        assert ran.exit_code == 1, ran.output
    return tmp_path / "out" / "G"


def test_a_groups_retry_limit_counts_the_unsaved_inputs_as_show_lists_them(cli, tmp_path: Path) -> None:
    """--limit 6 over a group whose first six failures hold one that could not be pickled: the retry said "8
    failure(s) match", and took an input of the second shard that `show --failures --limit 6` does not list."""
    group = group_of_two(cli, tmp_path)
    listed = cli("show", group, "--failures", "--limit", "6")
    assert listed.exit_code == 0, listed.output
    shown = [int(n) for n in re.findall(r"item (\d+) is bad", said(listed))]
    assert len(shown) == 6 and [n for n in shown if n % 7 == 0], shown  # one of them could not be saved
    saved = [n for n in shown if n % 7]

    ledger = tmp_path / "retried"
    retried = cli("retry", group, "--limit", "6", "-p", "fix=true", "-p", f"ledger={ledger}", "--no-shell")
    assert retried.exit_code == 0, retried.output
    text = said(retried)
    assert "6 failure(s) match --limit 6" in text, text
    unsaved = len(shown) - len(saved)
    assert f"{unsaved} failed input(s) of group 'G' could not be pickled and are left out" in text, text
    assert processed(ledger) == Counter(saved), text  # exactly the saved inputs that show listed, once each

    # the rest of the group's failures are still there for the next retry, which leaves these out
    rest = cli("retry", group, "-p", "fix=true", "-p", f"ledger={ledger}", "--no-shell")
    assert rest.exit_code == 0, rest.output
    failed = [n for n in range(60) if n % 3]
    assert processed(ledger) == Counter(n for n in failed if n % 7), said(rest)


def test_a_groups_retry_refuses_other_shard_counts_and_names_the_group(cli, tmp_path: Path) -> None:
    """-p shards given to a retry of a group started with --shard I/N: its own N was refused, and the refusal
    suggested retrying the first shard alone."""
    group = group_of_two(cli, tmp_path)
    ledger = tmp_path / "retried"
    refused = cli("retry", group, "-p", "shards=4", "-p", "fix=true", "-p", f"ledger={ledger}", "--no-shell")
    assert refused.exit_code == 2, refused.output
    assert f"Run it without -p shards: batchcli retry {group}" in said(refused), said(refused)
    assert "shard-0-of-2" not in said(refused) and not ledger.exists()

    one = cli("retry", group, "--shard", "1/2", "-p", "shards=4", "-p", "fix=true", "--no-shell")
    assert one.exit_code == 2 and f"batchcli retry {group} --shard 1/2" in said(one), said(one)
    assert "(and your other -p values)" in said(one)

    # the suggestion keeps the filters: without them it retried every failure
    filtered = cli("retry", group, "--match", "bad", "--limit", "5", "-p", "shards=3", "--no-shell")
    assert filtered.exit_code == 2 and f"Run it without -p shards: batchcli retry {group} --match bad --limit 5" in said(filtered)
    # and where the retry goes, the path quoted for a shell: without -d it went beside the group instead
    (tmp_path / "my runs").mkdir()
    placed = cli("retry", group, "-d", tmp_path / "my runs", "-p", "shards=3", "--no-shell")
    assert placed.exit_code == 2 and f"Run it without -p shards: batchcli retry {group} -d '{tmp_path / 'my runs'}'" in said(placed)
    spelled = cli("retry", group, "--limit", "1", "-p", "shards=02", "-p", "fix=true", "-p", f"ledger={ledger}", "--no-shell")
    assert spelled.exit_code == 0, spelled.output  # 02 is the group's count too
    ledger.unlink()

    # the group's own count given again is the value it ran with: accepted
    again = cli("retry", group, "-p", "shards=2", "-p", "fix=true", "-p", f"ledger={ledger}", "--no-shell")
    assert again.exit_code == 0, again.output
    assert sum(processed(ledger).values()) == 34 - 1 and "Finished: 33 succeeded, 0 failed of 33" in said(again)


@pytest.mark.parametrize("filtered", [False, True])
def test_a_retry_whose_run_is_moved_away_while_it_copies_leaves_nothing_behind(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, filtered: bool
) -> None:
    """The inputs are checked, then the retry's directory is made, then they are copied from the run: the run moved
    away between the two left an empty run directory and a message about a bad argument."""
    ran = cli("exec", LOCKED, "-d", "out", *QUIET, "-p", f"ledger={tmp_path / 'first'}")
    assert ran.exit_code == 1, ran.output
    monkeypatch.setenv("MOVE_AWAY", str(ran.run_dir))
    monkeypatch.setenv("MOVE_AT", "59")  # the last failure: moved as the check loads it, before the copy
    ledger = tmp_path / "retried"
    filters = ("--match", "bad") if filtered else ()
    retried = cli("retry", ran.run_dir, *filters, "-p", "fix=true", "-p", f"ledger={ledger}", "--no-shell")
    text = said(retried)
    assert retried.exit_code == 2 and "Traceback" not in retried.output, retried.output
    assert f"The failed inputs of {str(ran.run_dir)!r} could not be read as the retry took them" in text, text
    assert "Was the run moved, deleted or changed meanwhile?" in text, text
    moved = Path(f"{ran.run_dir}.moved")
    assert list((tmp_path / "out").iterdir()) == [moved]  # no run directory left for the retry
    assert not ledger.exists()

    monkeypatch.delenv("MOVE_AWAY")
    moved.rename(ran.run_dir)  # back in place: the retry runs
    again = cli("retry", ran.run_dir, *filters, "-p", "fix=true", "-p", f"ledger={ledger}", "--no-shell")
    assert again.exit_code == 0 and "Finished: 34 succeeded, 0 failed of 34" in said(again), again.output


def test_a_resumed_retry_does_not_load_the_inputs_it_processed(tmp_path: Path, run_batchcli) -> None:
    """A stopped retry refused to resume because an input it had processed already no longer loaded (all were
    checked), and its advice named options resume does not take."""
    ran = run_batchcli("exec", LOCKED, "-d", "out", *QUIET, "-p", f"ledger={tmp_path / 'first'}", "-p", "count=30")
    assert ran.exit_code == 1 and ran.summary["failed"] == 20, ran.output
    parent = ran.run_dir
    ledger = tmp_path / "retried"
    stopped = run_batchcli("retry", parent, "-p", "fix=true", "-p", f"ledger={ledger}", "-p", "stop_at=4",
                           "-p", "concurrency=1", "--no-shell")  # fmt: skip
    assert stopped.exit_code == 130, stopped.output
    retry_run = stopped.run_dir
    assert retry_run != parent and 1 in processed(ledger) and 29 not in processed(ledger), processed(ledger)

    # an input it still takes that does not load: refused, with advice that fits a resume
    refused = run_batchcli("resume", retry_run, "--no-shell", RESTORE_FAILS="29")
    text = said(refused)
    assert refused.exit_code == 2 and "RuntimeError: item 29 cannot be restored" in text, refused.output
    assert "fix it, or retry the run it retried instead, leaving this input out with --error-type" in text, text
    assert f"batchcli retry {parent} --match ..." in text, text  # named, as it is still there

    # one it processed already is not loaded at all: the resume finishes the rest, each input processed once
    resumed = run_batchcli("resume", retry_run, "--no-shell", RESTORE_FAILS="1")
    assert resumed.exit_code == 0, resumed.output
    assert resumed.summary["succeeded"] == 17 and resumed.summary["failed"] == 0, resumed.output
    assert processed(ledger) == Counter(n for n in range(30) if n % 3 and n % 7), processed(ledger)


def test_a_groups_retry_whose_group_is_moved_away_while_it_starts_makes_nothing_in_its_place(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The group moved away as the retry checked its inputs: making the retry's directory made the group's again,
    empty, in its place, and moving the group back (as the message said) nested it in there."""
    group = group_of_two(cli, tmp_path)
    monkeypatch.setenv("MOVE_AWAY", str(group))
    monkeypatch.setenv("MOVE_AT", "59")  # the last failure of the last shard
    retried = cli("retry", group, "-p", "fix=true", "-p", f"ledger={tmp_path / 'retried'}", "--no-shell")
    assert retried.exit_code == 2 and "could not be read as the retry took them" in said(retried), retried.output
    assert ".. " not in said(retried)  # one sentence ends once
    moved = Path(f"{group}.moved")
    assert list((tmp_path / "out").iterdir()) == [moved]  # nothing made where the group was

    monkeypatch.delenv("MOVE_AWAY")
    moved.rename(group)  # as the message says: back in place, and the retry runs
    again = cli("retry", group, "-p", "fix=true", "-p", f"ledger={tmp_path / 'retried'}", "--no-shell")
    assert again.exit_code == 0 and "Finished: 34 succeeded, 0 failed of 34" in said(again), again.output


def test_a_stop_while_a_retry_copies_its_inputs_ends_the_copy_and_leaves_nothing(tmp_path: Path, run_batchcli) -> None:
    """A Ctrl-C as the retry copied its inputs waited for the copy's end (a second one too, "stopping at once"),
    then started the run only to stop it, and left a run directory holding every input, unprocessed."""
    import signal
    import subprocess
    import sys

    from conftest import subprocess_env

    count = 200_000
    ran = run_batchcli("exec", PROJECTS / "flood" / "flood.py", "-d", "out", "-p", f"count={count}", *QUIET[1:])
    assert ran.exit_code == 1 and ran.summary["failed"] == count, ran.output
    retry = subprocess.Popen(
        [sys.executable, "-m", "batchcli", "retry", str(ran.run_dir), "--no-shell", "-d", str(tmp_path / "again")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=subprocess_env(),
    )  # fmt: skip
    lines = []
    assert retry.stdout is not None
    for line in retry.stdout:
        lines.append(line)
        if line.startswith("Copying"):  # said as the copy begins: some 200 ms of it are left
            retry.send_signal(signal.SIGINT)
    assert retry.wait(timeout=120) == 130, lines
    text = " ".join("".join(lines).split())
    assert "Stopped: SIGINT arrived before the run started; nothing ran and no run directory was made." in text, text
    assert "SIGINT: stopping. The run has not started: it ends before any item starts" in text, text  # no in-flight items
    assert not (tmp_path / "again").exists()  # neither the run's directory nor the one made for it


def test_show_lists_the_failures_retry_would_take_after_a_later_retry(cli, tmp_path: Path) -> None:
    """Once a later retry had processed some failures, `show --failures --limit 3` listed them still, and its "Retry
    them with: ... --limit 3" took three others."""
    ran = cli("exec", LOCKED, "-d", "out", *QUIET, "-p", f"ledger={tmp_path / 'first'}")
    tried = cli("retry", ran.run_dir, "--limit", "2", "-p", "fix=true", "-p", f"ledger={tmp_path / 'retried'}", "--no-shell")
    assert tried.exit_code == 0 and sorted(processed(tmp_path / "retried")) == [1, 2], tried.output
    shown = cli("show", ran.run_dir, "--failures", "--limit", "3")
    dry = cli("retry", ran.run_dir, "--limit", "3", "--dry-run")
    listed = [int(n) for n in re.findall(r"item (\d+) is bad", said(shown))]
    assert listed == [int(n) for n in re.findall(r"item (\d+) is bad", said(dry))] == [4, 5, 7], said(shown)
    assert "Leaving out 2 failure(s)" in said(shown) and f"Retry them with: batchcli retry {ran.run_dir} --limit 3" in said(shown)


def test_a_second_retry_started_while_the_first_gets_ready_is_refused(cli, tmp_path: Path, run_batchcli) -> None:
    """The first retry checks its inputs (a million take seconds), and a second of the same run saw no retry running
    and took every input too: each was processed twice, at once."""
    import subprocess
    import sys

    from conftest import subprocess_env

    ran = cli("exec", LOCKED, "-d", "out", *QUIET, "-p", f"ledger={tmp_path / 'first'}")
    gate, ledger = tmp_path / "gate", tmp_path / "retried"
    first = subprocess.Popen(
        [sys.executable, "-m", "batchcli", "retry", str(ran.run_dir), "-p", "fix=true", "-p", f"ledger={ledger}", "--no-shell"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=subprocess_env(WAIT_AT="59", WAIT_FOR=str(gate)),
    )  # fmt: skip
    try:
        waiting = Path(f"{gate}.waiting")
        for _ in range(1200):  # the first is checking its inputs, held at the last
            if waiting.exists() or first.poll() is not None:
                break
            time.sleep(0.05)
        assert waiting.exists(), first.communicate()[0]
        second = cli("retry", ran.run_dir, "-p", "fix=true", "-p", f"ledger={ledger}", "--no-shell")
        assert second.exit_code == 2, second.output
        assert f"is being retried by another process (pid {first.pid})" in said(second), second.output
        assert "would process inputs twice" in said(second) and second.run_dir is None
        gate.touch()
        output = first.communicate(timeout=120)[0]
    finally:
        gate.touch()
        first.kill() if first.poll() is None else None
    assert first.returncode == 0, output
    assert processed(ledger) == Counter(n for n in range(60) if n % 3 and n % 7)  # each once

    # its lock went with it: a retry now finds only the inputs that could not be saved left, and says so
    after = cli("retry", ran.run_dir, "-p", "fix=true", "-p", f"ledger={ledger}", "--no-shell")
    assert after.exit_code == 1 and "Nothing was retried: none of the 6 failure(s)" in said(after), after.output
    assert not list(ran.run_dir.glob("batchcli.retrying*"))  # nor is its lock file left in the run's directory


def test_a_retry_never_writes_through_a_link_planted_as_its_lock_file(cli, tmp_path: Path) -> None:
    """A run directory copied from someone else may hold `batchcli.retrying` as a symbolic link: the retry truncated
    and wrote its pid into the file it named, then removed the link."""
    ran = cli("exec", LOCKED, "-d", "out", *QUIET, "-p", f"ledger={tmp_path / 'first'}")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (ran.run_dir / "batchcli.retrying").symlink_to(victim)
    refused = cli("retry", ran.run_dir, "-p", "fix=true", "-p", f"ledger={tmp_path / 'retried'}", "--no-shell")
    assert refused.exit_code == 2 and "is a symbolic link, which batchcli never makes" in said(refused), refused.output
    assert victim.read_text() == "precious\n" and (ran.run_dir / "batchcli.retrying").is_symlink()
    assert not (tmp_path / "retried").exists()


def test_the_commands_messages_suggest_quote_a_path_with_a_space(cli, tmp_path: Path) -> None:
    """"finished already ... Reprocess its failed inputs with: batchcli retry PATH" could not be pasted back when the
    path held a space."""
    ran = cli("exec", LOCKED, "-d", tmp_path / "my runs", *QUIET, "-p", f"ledger={tmp_path / 'first'}", "-p", "count=12")
    assert ran.exit_code == 1, ran.output
    (run,) = (tmp_path / "my runs").iterdir()
    finished = cli("resume", run, "--no-shell")
    assert f"Reprocess its failed inputs with: batchcli retry '{run}'" in said(finished), finished.output
