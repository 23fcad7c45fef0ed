"""README's commands from a shell whose PATH lacks the project's environment (issue 35): `lmpipe`
runs its dvc and git with its own bin first on PATH (stages' `python`, queue workers' `dvc`),
and the README's one activation step serves the `dvc` lines. One tiny model (gru), so that
each command reruns a stage or two in seconds."""
import os
import re
import subprocess
import sysconfig
from pathlib import Path

import pytest
import yaml

from .conftest import ROOT, dvc_repo, run
from .test_pipeline_e2e import tiny as tiny_pipeline

pytestmark = pytest.mark.slow
BIN = Path(sysconfig.get_path("scripts"))   # the venv's: python, dvc, lmpipe
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]


def tiny(params: dict) -> None:
    """The end-to-end test's tiny pipeline with one model, gru, and 50 bootstrap resamples."""
    tiny_pipeline(params)
    params["models"] = {"gru": params["models"]["gru"]}
    params["evaluate"]["bootstrap_resamples"] = 50


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """The tiny pipeline reproduced and committed, with the README's `.venv` (a link to this one)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LMPIPE_CHECKPOINTS", str(tmp_path_factory.mktemp("readme-checkpoints")))
        repo = dvc_repo(tmp_path_factory.mktemp("readme") / "repo", tiny)
        (repo / ".venv").symlink_to(BIN.parent)
        with open(repo / ".git" / "info" / "exclude", "a") as exclude:
            exclude.write(".venv\n")   # .gitignore's `.venv/` matches a folder, not a link
        run(["dvc", "repro"], repo)
        commit(repo, "reproduced")
        yield repo


def commit(repo: Path, message: str) -> None:
    run(["git", "add", "-A"], repo)
    run([*GIT, "commit", "-q", "--allow-empty", "-m", message], repo)


def bare(repo: Path, command: str) -> str:
    """`command` in bash, in `repo`, with PATH as a new shell has it: without the venv's bin (and
    no VIRTUAL_ENV); its stdout + stderr, failing the test unless it succeeds."""
    path = [entry for entry in os.environ["PATH"].split(os.pathsep)
            if entry and Path(entry).resolve() != BIN.resolve()]
    env = {**os.environ, "PATH": os.pathsep.join(path)}
    for name in ("VIRTUAL_ENV", "MLFLOW_TRACKING_URI", "DVC_ROOT"):
        env.pop(name, None)
    probe = subprocess.run(["bash", "-c", "command -v lmpipe python || true"], env=env,
                           capture_output=True, text=True).stdout
    assert str(BIN) not in probe and "lmpipe" not in probe, probe   # the premise: no venv on PATH
    result = subprocess.run(["bash", "-c", command], cwd=repo, env=env, capture_output=True,
                            text=True, timeout=600)
    out = result.stdout + result.stderr
    assert result.returncode == 0, f"{command} failed:\n{out[-3000:]}"
    return out


def readme_line(start: str) -> str:
    """README.md's command line that starts with `start`, its comment left out."""
    lines = [line.split("  #")[0].strip() for line in (ROOT / "README.md").read_text().splitlines()
             if line.startswith(start)]
    assert len(lines) == 1, (start, lines)
    return lines[0]


def test_the_readmes_activation_serves_dvc_exp_run_and_exp_show(repo):
    """DVC runs a stage's `python` from PATH: after the README's activation line, `dvc exp run
    -S` retrains gru with the venv's python; the README's `dvc exp show` is a narrow table."""
    activate = readme_line("source .venv/bin/activate")
    out = bare(repo, f"{activate} && dvc exp run -n gru-h8 -S models.gru.hidden_dim=8")
    assert "Running stage 'train@gru'" in out and "Ran experiment(s): gru-h8" in out, out
    assert yaml.safe_load((repo / "params.yaml").read_text())["models"]["gru"]["hidden_dim"] == 8
    table = bare(repo, f"{activate} && COLUMNS=400 {readme_line('dvc exp show')} --no-pager")
    assert "[gru-h8]" in table and "gru.test_ppl" in table and "models.gru.hidden_dim" in table, table
    assert max(len(line.rstrip()) for line in table.splitlines()) <= 120, table
    commit(repo, "gru-h8")


def test_lmpipe_seeds_runs_its_queue_workers_without_activation(repo):
    """`.venv/bin/lmpipe seeds gru --run 1`: DVC's queue worker is spawned as `dvc` from PATH
    and runs the stages' `python`; both are the venv's, so the experiment succeeds."""
    out = bare(repo, ".venv/bin/lmpipe seeds gru --run 1 --jobs 1 --first 7")
    assert "1 worker(s) started" in out and "0 running, 0 queued, 1 success" in out, out
    assert re.search(r"^\s+7\s+gru-seed-7\s+\d", out, re.M), out


def test_lmpipe_retrain_runs_stages_without_activation(repo):
    """`.venv/bin/lmpipe retrain --base REV` after a committed change of promote.margin: dvc and
    the promote stage's `python` are the venv's."""
    base = run(["git", "rev-parse", "HEAD"], repo).strip()
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["promote"]["margin"] = 0.25
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    commit(repo, "margin 0.25")
    out = bare(repo, f".venv/bin/lmpipe retrain --base {base}")
    assert "retrain: ran promote" in out, out
    assert "promote.margin" in (repo / "reports" / "retrain.md").read_text()
    commit(repo, "retrained")
