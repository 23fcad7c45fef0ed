import os
from pathlib import Path

import numpy as np
import pytest

from .oracle_prepare import vocab_of

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LMPIPE_SHARED", ROOT.parent / "shared"))

TOY = [
    "the cat sat on the mat".split(),
    "the dog sat on the log".split(),
    "the cat saw the dog".split(),
    "a dog sat".split(),
]


@pytest.fixture(scope="session", autouse=True)
def checkpoint_root(tmp_path_factory):
    """Training checkpoint folders (LMPIPE_CHECKPOINTS) in a session folder, never ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        root = tmp_path_factory.mktemp("checkpoints")
        patch.setenv("LMPIPE_CHECKPOINTS", str(root))
        yield root


def checkpoint_folders(kind: str = "gru") -> list[Path]:
    """The checkpoint folders of models.KIND under $LMPIPE_CHECKPOINTS (resume.folder's)."""
    return sorted(Path(os.environ["LMPIPE_CHECKPOINTS"]).glob(f"{kind}-*/"))


def checkpoint_folder(kind: str = "gru") -> Path:
    """The one checkpoint folder of models.KIND under $LMPIPE_CHECKPOINTS."""
    found = checkpoint_folders(kind)
    assert len(found) == 1, found
    return found[0]


@pytest.fixture
def toy_vocab():
    return vocab_of(TOY, min_count=1, max_size=100)


@pytest.fixture
def toy_stream(toy_vocab):
    return toy_vocab.stream(TOY)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, process, seconds: float = 120) -> None:
    """Until `url` answers; fails if `process` (the server) exits or time runs out."""
    import time
    import urllib.request
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            assert time.monotonic() < deadline and process.poll() is None, f"{url} did not come up"
            time.sleep(0.5)


# In a page of MLflow's compare view: the row of metric KEY (scrolling its virtualized grid, 300
# px high, until the row is rendered), as {"html": the page, "values": the row's cells, by run}
METRIC_ROW = """(() => {
  const key = [...document.querySelectorAll('a[href*="#/metric?"]')].find(a => a.textContent === KEY);
  if (!key) {
    document.querySelectorAll('.ReactVirtualized__Grid').forEach(g => { g.scrollTop += 135; });
    return null;
  }
  const top = key.closest('div[style*="top"]').style.top;
  const cells = [...document.querySelectorAll('span[tooltip-data-state]')]
    .map(s => s.parentElement).filter(d => d.style.top === top && d.style.left)
    .sort((a, b) => parseFloat(a.style.left) - parseFloat(b.style.left)).map(d => d.textContent);
  return JSON.stringify({html: document.documentElement.outerHTML, values: cells});
})()"""


def mlflow_metric_row(chromium: str, url: str, key: str, seconds: float = 120) -> dict:
    """Open `url` (MLflow's compare-runs view) in headless Chromium and read metric `key`'s row
    through the DevTools protocol (aiohttp's websocket client): {"html", "values"}. The view
    renders only the rows its 300 px grid shows, so a dumped DOM misses rows further down."""
    import asyncio
    import json
    import subprocess
    import time

    import aiohttp
    import requests
    port = free_port()
    browser = subprocess.Popen([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                                f"--remote-debugging-port={port}", "--window-size=4000,3000", url],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + seconds
    script = METRIC_ROW.replace("KEY", json.dumps(key))

    async def read(target: str) -> dict:
        async with aiohttp.ClientSession() as session, \
                session.ws_connect(target, max_msg_size=0) as ws:
            call = 0
            while time.monotonic() < deadline:
                call += 1
                await ws.send_json({"id": call, "method": "Runtime.evaluate",
                                    "params": {"expression": script, "returnByValue": True}})
                while (answer := await ws.receive_json()).get("id") != call:
                    pass
                value = answer.get("result", {}).get("result", {}).get("value")
                if value:
                    return json.loads(value)
                await asyncio.sleep(0.5)
        raise AssertionError(f"metric {key!r} never appeared in {url}")

    try:
        while True:
            try:
                pages = [t for t in requests.get(f"http://127.0.0.1:{port}/json/list", timeout=5).json()
                         if t["type"] == "page"]
                if pages:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline and browser.poll() is None, "chromium did not start"
            time.sleep(0.5)
        return asyncio.run(read(pages[0]["webSocketDebuggerUrl"]))
    finally:
        browser.terminate()
        browser.wait(timeout=30)


def run(args, cwd, timeout: int = 900) -> str:
    """Run a command with the venv's tools first on PATH and no MLFLOW_TRACKING_URI; fail the test
    with its output unless it succeeds. Returns stdout + stderr."""
    import subprocess
    import sys
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout + result.stderr


def dvc_repo(repo: Path, edit_params) -> Path:
    """A fresh git + DVC repository at `repo` holding the project's pipeline (code, dvc.yaml,
    params.yaml edited in place by `edit_params(dict)`), committed."""
    import shutil

    import yaml
    repo.mkdir(parents=True)
    for name in ("pipeline", "stages", "configs"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "params.yaml", ".gitignore"):
        shutil.copy(ROOT / name, repo / name)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    edit_params(params)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    run(["git", "init", "-q"], repo)
    run([*git, "commit", "-q", "--allow-empty", "-m", "x"], repo)
    run(["dvc", "init", "-q"], repo)
    shutil.copy(ROOT / ".dvcignore", repo / ".dvcignore")
    run(["git", "add", "-A"], repo)
    run([*git, "commit", "-q", "-m", "init"], repo)
    return repo
