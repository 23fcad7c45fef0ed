"""`lmpipe seeds`: the aggregation over seeds, the reading of `dvc exp show --json` and of DVC's
queue, and the one-line argument errors, mostly without running DVC (the queue itself is
exercised end to end in test_pipeline_e2e.py)."""
import copy
import os
import shutil
import statistics
import subprocess

import pytest

from pipeline.cli import seeds
from pipeline.cli.main import main

from .conftest import ROOT


def names(text: str, *things: str) -> None:
    """Each thing (a kind, an experiment, a number, a command of the fix) stands in the text."""
    missing = [thing for thing in things if thing not in text]
    assert not missing, (missing, text)


def test_summarize_mean_sample_sd_and_mean_half_width():
    rows = [{"test_ppl": 40.0, "ci_low": 38.0, "ci_high": 42.0},     # half-width 2
            {"test_ppl": 42.0, "ci_low": 41.0, "ci_high": 43.0},     # 1
            {"test_ppl": 44.0, "ci_low": None, "ci_high": None}]     # no interval: not averaged
    summary = seeds.summarize(rows)
    assert summary["n"] == 3
    assert summary["mean"] == pytest.approx(42.0)
    assert summary["sd"] == pytest.approx(2.0)                       # ddof=1: sqrt(8 / 2)
    assert summary["sd"] == pytest.approx(statistics.stdev([40.0, 42.0, 44.0]))
    assert summary["ci_half_width"] == pytest.approx(1.5)


def test_summarize_below_two_seeds_and_without_intervals():
    assert seeds.summarize([]) == {"n": 0, "mean": None, "sd": None, "ci_half_width": None}
    one = seeds.summarize([{"test_ppl": 40.0}])
    assert one == {"n": 1, "mean": 40.0, "sd": None, "ci_half_width": None}
    two = seeds.summarize([{"test_ppl": 40.0}, {"test_ppl": 41.0}])
    assert two["sd"] == pytest.approx(0.7071, abs=1e-4) and two["ci_half_width"] is None


PARAMS = {"seed": 1337, "train": {"lr": 0.003},
          "models": {"gru": {"hidden_dim": 16, "seed": None}, "rnn": {"hidden_dim": 16, "seed": None}}}


def _entry(name, gru_seed=None, ppl=40.0, ci=None, state="success", hidden=16, error=None):
    """One experiment of `dvc exp show --json` (the layout DVC 3.67 writes)."""
    params = copy.deepcopy(PARAMS)
    params["models"]["gru"].update(seed=gru_seed, hidden_dim=hidden)
    gru = {"test_ppl": ppl, "val_ppl": ppl + 1, "objective": "causal"}
    if ci:
        gru.update(test_ppl_ci_low=ci[0], test_ppl_ci_high=ci[1])
    data = {"rev": "0" * 40, "params": {"params.yaml": {"data": params}},
            "metrics": {"metrics/metrics.json": {"data": {"gru": gru, "ngram": {"test_ppl": 50.0}}}}}
    rev = {"rev": "a" * 40, "name": name, "data": data, "error": error, "experiments": None}
    return {"revs": [rev], "name": name,
            "executor": None if state is None else {"state": state, "name": "dvc-task"}}


def _shown(*experiments, workspace_ppl=39.0, workspace_ci=(37.0, 41.0)):
    workspace = _entry("workspace", ppl=workspace_ppl, ci=workspace_ci)["revs"][0]
    workspace.update(rev="workspace", name=None)
    baseline = _entry("main")["revs"][0]
    baseline.update(rev="b" * 40, experiments=list(experiments))
    return [workspace, baseline]


def test_collect_keeps_the_experiments_that_differ_only_in_the_seed():
    shown = _shown(_entry("gru-seed-1", 1, 41.0, (39.0, 43.0)),
                   _entry("gru-seed-2", 2, 43.0),                        # no CI keys: "-"
                   _entry("gru-seed-3", 3, state="failed"),              # not finished: skipped
                   _entry("gru-seed-4", 4, state="queued"),
                   _entry("gru-seed-5", 5, error={"msg": "Experiment run failed"}),
                   _entry("wide", 6, 30.0, hidden=32),                   # other params: left out
                   _entry("explicit", 1337, 39.5),                       # the workspace's seed
                   _entry("by-hand", 7, 45.0, state=None))               # `dvc exp run`: counted
    rows, left_out = seeds.collect(shown, "gru")
    assert [(r["seed"], r["experiment"], r["test_ppl"]) for r in rows] == [
        (1, "gru-seed-1", 41.0), (2, "gru-seed-2", 43.0), (7, "by-hand", 45.0),
        (1337, "workspace", 39.0)]                                       # seed 1337 once
    assert rows[0]["ci_low"] == 39.0 and rows[1]["ci_low"] is None
    assert left_out == 1
    rows, _ = seeds.collect(shown, "gru", workspace=False)               # stale workspace
    assert [r["experiment"] for r in rows][-1] == "explicit"


def test_collect_without_metrics_or_workspace_entry():
    shown = _shown(_entry("gru-seed-1", 1))
    del shown[0]["data"]["metrics"]["metrics/metrics.json"]                    # never reproduced
    rows, _ = seeds.collect(shown, "gru")
    assert [r["experiment"] for r in rows] == ["gru-seed-1"]
    with pytest.raises(ValueError, match="workspace"):
        seeds.collect(shown[1:], "gru")


def test_render_puts_the_seed_spread_beside_the_bootstrap_interval():
    rows, left_out = seeds.collect(_shown(_entry("gru-seed-1", 1, 41.0, (39.0, 43.0)),
                                          _entry("gru-seed-2", 2, 43.0)), "gru")
    text = seeds.render("gru", rows, seeds.summarize(rows), left_out)
    lines = text.splitlines()
    assert lines[0].split() == ["seed", "experiment", "test", "ppl", "95%", "CI"]
    assert lines[1].split() == ["1", "gru-seed-1", "41.00", "39.00–43.00"]
    assert lines[2].split() == ["2", "gru-seed-2", "43.00", "-"]
    assert lines[3].split() == ["1337", "workspace", "39.00", "37.00–41.00"]
    assert lines[-1].startswith("gru: ")
    names(lines[-1], "41.00", "SD 2.000", "3 seeds", "±2.000")


def test_render_below_two_seeds_says_what_to_run():
    rows, _ = seeds.collect(_shown(), "gru")
    text = seeds.render("gru", rows, seeds.summarize(rows))
    names(text, "1337", "lmpipe seeds gru --run 5 --jobs 2")
    text = seeds.render("gru", [], seeds.summarize([]))
    assert text.startswith("gru: ")
    names(text, "lmpipe seeds gru --run 5")
    no_ci = [{"seed": s, "experiment": "x", "objective": "cloze", "test_ppl": p,
              "ci_low": None, "ci_high": None} for s, p in ((1, 40.0), (2, 42.0))]
    text = seeds.render("birnn", no_ci, seeds.summarize(no_ci))
    assert text.splitlines()[-1].startswith("birnn: ")
    names(text.splitlines()[-1], "pseudo-ppl", "41.00", "test_ppl_ci_low")


def test_report_leaves_out_a_stale_workspace(monkeypatch):
    shown = _shown(_entry("gru-seed-1", 1, 41.0), _entry("gru-seed-2", 2, 43.0))
    monkeypatch.setattr(seeds, "_exp_show", lambda root, all_commits=False: shown)
    monkeypatch.setattr(seeds, "_up_to_date", lambda root: False)    # params edited, no repro
    text = seeds.report(ROOT, "gru")
    assert "workspace" not in text.splitlines()[-3]
    names(text, "workspace", "`dvc status`")
    assert text.splitlines()[-1].startswith("gru: ")
    names(text.splitlines()[-1], "42.00", "SD 1.414", "2 seeds")
    monkeypatch.setattr(seeds, "_up_to_date", lambda root: True)
    assert "over 3 seeds" in seeds.report(ROOT, "gru")


QUEUE = [("gru-seed-2", "Running"), ("gru-seed-3", "Queued"), (None, "Failed"),
         ("gru-seed-1", "Success"), ("gru-seed-2", "Failed")]   # queue_tasks, as DVC lists them


def test_queue_tasks_reads_dvcs_queue(tmp_path):
    """A real DVC project with one queued experiment: DVC's Python API names it and its state."""
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "params.yaml").write_text("seed: 1\n")
    (tmp_path / "dvc.yaml").write_text("stages:\n  echo:\n    cmd: echo hi\n    params: [seed]\n")
    seeds.commands.run(tmp_path, "dvc", "init", "-q")
    subprocess.run([*git, "add", "-A"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "x"], cwd=tmp_path, check=True)
    assert seeds.queue_tasks(tmp_path) == []
    seeds.commands.run(tmp_path, "dvc", "exp", "run", "--queue", "-n", "gru-seed-2", "-S", "seed=2")
    assert seeds.queue_tasks(tmp_path) == [("gru-seed-2", "Queued")]


def test_wait_polls_until_nothing_is_queued_or_running(monkeypatch, capsys):
    done = [(name, {"Running": "Success", "Queued": "Failed"}.get(state, state))
            for name, state in QUEUE]
    answers = iter([QUEUE, QUEUE, done])
    monkeypatch.setattr(seeds, "queue_tasks", lambda root: next(answers))
    monkeypatch.setattr(seeds, "POLL_S", 0)
    outcome = seeds.wait(ROOT, ["gru-seed-1", "gru-seed-2", "gru-seed-3"])
    assert outcome == {"gru-seed-1": "Success", "gru-seed-2": "Success", "gru-seed-3": "Failed"}
    progress = capsys.readouterr().out.splitlines()
    assert len(progress) == 2            # printed on a change, not on every poll
    assert progress[-1].endswith("0 running, 0 queued, 2 success, 1 failed")


def test_failed_experiments_end_in_one_error_after_the_report(monkeypatch, capsys):
    _project(monkeypatch)
    monkeypatch.setattr(seeds, "queue", lambda root, kind, seed_range, jobs:
                        [f"{kind}-seed-{s}" for s in seed_range])
    monkeypatch.setattr(seeds, "wait", lambda root, names: {names[0]: "Success"})
    monkeypatch.setattr(seeds, "report", lambda root, kind, all_commits=False: "THE REPORT")
    with pytest.raises(SystemExit):
        main(["seeds", "gru", "--run", "2"])
    out, message = capsys.readouterr()
    assert out.strip() == "THE REPORT"
    assert message.startswith("lmpipe: error: ") and message.count("\n") == 1, message
    names(message, "gru-seed-2", "dvc queue logs gru-seed-2")
    assert "gru-seed-1" not in message


def test_a_taken_name_is_refused_before_anything_is_queued(monkeypatch):
    shown = _shown(_entry("gru-seed-2", 2))
    monkeypatch.setattr(seeds, "_exp_show", lambda root, all_commits=False: shown)
    monkeypatch.setattr(seeds.commands, "run", lambda *a, **k: pytest.fail("nothing may be queued"))
    with pytest.raises(ValueError) as raised:
        seeds.queue(ROOT, "gru", range(1, 4), 2)
    names(str(raised.value), "gru-seed-2", "--first 3", "dvc exp remove gru-seed-2")


def test_a_failure_halfway_says_what_stays_queued(monkeypatch):
    monkeypatch.setattr(seeds, "_exp_show", lambda root, all_commits=False: _shown())
    monkeypatch.setattr(seeds, "uncommitted_note", lambda root: "")
    calls = []

    def dvc(root, command, *args, **options):
        calls.append(args)
        if len(calls) == 2:
            raise ValueError("`dvc exp run ...` failed: ERROR: disk full")
        return ""
    monkeypatch.setattr(seeds.commands, "run", dvc)
    with pytest.raises(ValueError) as raised:
        seeds.queue(ROOT, "gru", range(1, 4), 2)
    names(str(raised.value), "disk full", "gru-seed-1", "dvc queue start -j 2", "dvc queue remove gru-seed-1")
    assert calls[0] == ("exp", "run", "--queue", "-n", "gru-seed-1", "-S", "models.gru.seed=1",
                        "-S", "promote.sweep=true")   # a sweep member: never promoted


def test_ctrl_c_stops_the_waiting_not_the_experiments(monkeypatch):
    def interrupted(root):
        raise KeyboardInterrupt
    monkeypatch.setattr(seeds, "queue_tasks", interrupted)
    with pytest.raises(SystemExit) as raised:
        seeds.wait(ROOT, ["gru-seed-1"])
    names(str(raised.value), "waiting", "dvc queue", "lmpipe seeds gru")


def _project(monkeypatch, tmp_path=None, dvc=True, params=True):
    """cwd = a directory that looks like the project (params.yaml, dvc.yaml, .dvc/)."""
    if tmp_path is not None:
        if params:
            shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
        shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
        if dvc:
            (tmp_path / ".dvc").mkdir()
        monkeypatch.chdir(tmp_path)
    else:
        monkeypatch.setattr(seeds, "project_root", lambda kind: ROOT)
    monkeypatch.delenv("DVC_ROOT", raising=False)


def _error(argv, capsys) -> str:
    """The one line on stderr that `lmpipe ARGV` ends with, exit status 2."""
    with pytest.raises(SystemExit) as raised:
        main(argv)
    message = capsys.readouterr().err
    assert raised.value.code == 2 and message.startswith("lmpipe: error: "), message
    assert message.count("\n") == 1, message
    return message.strip()


@pytest.mark.parametrize(("argv", "named"), [
    (["seeds", "gpt"], ("KIND 'gpt'", "params.yaml", "gru")),
    (["seeds", "gru", "--run", "0"], ("argument --run", "'0'")),
    (["seeds", "gru", "--run", "2", "--jobs", "0"], ("argument --jobs", "'0'")),
    (["seeds", "gru", "--run", "2", "--first", "-1"], ("argument --first", "'-1'", "4294967295")),
    (["seeds", "gru", "--run", "2", "--first", "4294967295"], ("--first 4294967295", "2**32")),
    (["seeds", "gru", "--jobs", "2"], ("--jobs 2", "--run")),
    (["seeds", "gru", "--no-wait"], ("--no-wait", "--run")),
])
def test_argument_errors_are_one_line(argv, named, tmp_path, monkeypatch, capsys):
    _project(monkeypatch, tmp_path)
    names(_error(argv, capsys), *named)


def test_outside_a_dvc_project(tmp_path, monkeypatch, capsys):
    (tmp_path / "git-only").mkdir()
    _project(monkeypatch, tmp_path / "git-only", dvc=False)
    names(_error(["seeds", "gru"], capsys), "git-only", ".dvc")
    (tmp_path / "elsewhere").mkdir()
    _project(monkeypatch, tmp_path / "elsewhere", params=False)
    names(_error(["seeds", "gru", "--run", "2"], capsys), "`lmpipe seeds`", "params.yaml")


def test_a_failing_dvc_command_is_one_line(monkeypatch, tmp_path):
    """commands.run: dvc's own ERROR line (not its last line), of the dvc in lmpipe's bin/."""
    (tmp_path / "dvc").write_text("#!/bin/sh\necho 'Queueing with overrides ...' >&2\necho "
                                  "\"ERROR: Experiment conflicts with existing experiment "
                                  "'gru-seed-1'. To overwrite it:\" >&2\nprintf '\\n\\tdvc exp "
                                  "run -f\\n' >&2\nexit 255\n")
    (tmp_path / "dvc").chmod(0o755)
    monkeypatch.setattr(seeds.commands, "BIN", str(tmp_path))
    with pytest.raises(ValueError) as raised:
        seeds.commands.run(tmp_path, "dvc", "exp", "run", "--queue")
    line = str(raised.value)   # dvc's own ERROR line, not its last line nor its progress
    names(line, "`dvc exp run --queue`", "ERROR: Experiment conflicts with existing experiment "
                                          "'gru-seed-1'. To overwrite it:")
    assert "\n" not in line and "Queueing" not in line and "dvc exp run -f" not in line


def test_commands_run_with_lmpipes_bin_first_on_path(monkeypatch, tmp_path):
    """dvc resolved in lmpipe's bin/ although PATH lacks it, and run with that bin/ first on its
    PATH (DVC spawns its queue workers' `dvc` and the stages' `python` from it), once."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "dvc").write_text('#!/bin/sh\necho "$PATH"\n')
    (bin_dir / "dvc").chmod(0o755)
    monkeypatch.setattr(seeds.commands, "BIN", str(bin_dir))
    monkeypatch.setenv("PATH", f"/usr/bin:{bin_dir}:/bin")
    assert seeds.commands.run(tmp_path, "dvc").strip().split(os.pathsep) == [
        str(bin_dir), "/usr/bin", "/bin"]


def test_a_queue_without_workers_ends_in_one_error_not_a_silent_wait(monkeypatch):
    """Tasks queued, none running and no worker alive past STARTUP_S (one that failed to start,
    e.g. without `dvc` on its PATH): a ValueError naming them, the workers' logs and the fix."""
    queued = [("gru-seed-1", "Queued"), ("gru-seed-2", "Queued"), ("old", "Success")]
    looks = iter([queued] * 5)
    monkeypatch.setattr(seeds, "queue_tasks", lambda root: next(looks, None) or pytest.fail("a silent wait"))
    monkeypatch.setattr(seeds, "POLL_S", 0)
    monkeypatch.setattr(seeds, "STARTUP_S", 0)
    workers = iter([True, False])   # alive at the first look, gone at the second
    monkeypatch.setattr(seeds, "_celery", lambda root, read: (
        next(workers), str(ROOT / ".dvc/tmp/exps/celery")))
    with pytest.raises(ValueError) as raised:
        seeds.wait(ROOT, ["gru-seed-1", "gru-seed-2"])
    names(str(raised.value), "no DVC queue worker is running", "gru-seed-1, gru-seed-2",
          ".dvc/tmp/exps/celery/dvc-exp-worker-N.out", "`dvc queue start`", "dvc queue remove --queued")
    running = [("gru-seed-1", "Running"), ("gru-seed-2", "Queued")]
    answers = iter([running, running, [("gru-seed-1", "Success"), ("gru-seed-2", "Success")]])
    monkeypatch.setattr(seeds, "queue_tasks", lambda root: next(answers))
    monkeypatch.setattr(seeds, "_celery", lambda root, read: pytest.fail("no look while one runs"))
    assert seeds.wait(ROOT, ["gru-seed-1", "gru-seed-2"]) == {"gru-seed-1": "Success",
                                                               "gru-seed-2": "Success"}


def test_uncommitted_note(tmp_path):
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    plain, tmp_path = tmp_path / "plain", tmp_path / "repo"
    plain.mkdir()
    tmp_path.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "params.yaml").write_text("seed: 1\n")
    subprocess.run([*git, "add", "-A"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "x"], cwd=tmp_path, check=True)
    assert seeds.uncommitted_note(tmp_path) == ""
    (tmp_path / "params.yaml").write_text("seed: 2\n")
    (tmp_path / "new.py").write_text("")
    note = seeds.uncommitted_note(tmp_path)
    assert note.startswith("lmpipe: note: ") and "\n" not in note
    names(note, "params.yaml", "untracked new.py", "git add")
    assert note.index("params.yaml") < note.index("untracked")
    with pytest.raises(ValueError) as raised:
        seeds.uncommitted_note(plain)
    names(str(raised.value), str(plain), "git init")
