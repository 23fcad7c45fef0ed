import os
from pathlib import Path

import numpy as np
import pytest

from pipeline.vocab import Vocab

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LMPIPE_SHARED", ROOT.parent / "shared"))

TOY = [
    "the cat sat on the mat".split(),
    "the dog sat on the log".split(),
    "the cat saw the dog".split(),
    "a dog sat".split(),
]


@pytest.fixture
def toy_vocab():
    return Vocab.build(TOY, min_count=1, max_size=100)


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
