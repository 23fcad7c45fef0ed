"""A training that fails before its first checkpoint removes no checkpoint folder, nor a file of
one (issue 32, item 4), and each train.* value the schema lets in trains or is refused before any
work (item 3): a limit_train_batches that leaves no batch, Lightning's own refusals (exit 2).
The stages run in-process (stages.run_stage, as `python -m stages.X` does) on a tiny corpus."""
import os

import lightning as L
import numpy as np
import pytest
import yaml

from pipeline.config import ModelParams, TrainParams
from pipeline.neural import fit
from pipeline.neural.batches import check_data, least_fraction, train_loader
from pipeline.neural.lit import LitLM, build_trainer
from pipeline.neural.rnn import RNNLM, ModelConfig
from pipeline.text.vocab import BOS_ID, EOS_ID
from stages import run_stage
from stages import train as train_stage

from .test_damaged_state import repo, trained  # noqa: F401 (its fixtures)

TRAIN = ["gru", "data", "models/gru"]
pytestmark = pytest.mark.filterwarnings("ignore:The dirpath has changed")   # a copied folder


def _set_train(folder, **values):
    params = yaml.safe_load((folder / "params.yaml").read_text())
    params["train"].update(values)
    (folder / "params.yaml").write_text(yaml.safe_dump(params))


@pytest.fixture
def workdir(repo):  # noqa: F811 (the fixture)
    """test_damaged_state's tiny trained pipeline (its gru checkpoint folder kept as a training
    killed at its end leaves it), with three newer checkpoint folders of other gru configurations
    (so that the interrupted one is the fourth newest)."""
    for age in range(3):
        newer = repo / "ckpt" / f"gru-{age:016x}"
        newer.mkdir()
        (newer / "last.ckpt").write_bytes(b"another configuration's")
        os.utime(newer, (2e9 + age, 2e9 + age))
    return repo


def _files(folder):
    return {path: path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def _boom(*args, **kwargs):
    raise RuntimeError("injected")


# each point between the stage's start and the new training's first checkpoint, and how it fails
POINTS = {
    "refused": lambda patch, folder: _set_train(folder, limit_train_batches=0.001),
    "data": lambda patch, folder: patch.setattr(fit, "check_data", _boom),
    "model": lambda patch, folder: patch.setattr(RNNLM, "__init__", _boom),
    "trainer setup": lambda patch, folder: patch.setattr(LitLM, "configure_optimizers", _boom),
    "sanity check": lambda patch, folder: patch.setattr(LitLM, "validation_step", _boom),
    "first batch": lambda patch, folder: patch.setattr(LitLM, "training_step", _boom),
    "first checkpoint": lambda patch, folder: patch.setattr(LitLM, "on_save_checkpoint", _boom),
}


@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("start", ["another configuration", "a damaged folder"])
def test_a_failed_start_removes_no_checkpoint(workdir, capsys, monkeypatch, point, start):
    (interrupted_folder,) = [p for p in (workdir / "ckpt").glob("gru-*") if (p / "best.ckpt").exists()]
    if start == "another configuration":   # a new fingerprint: a folder of its own
        _set_train(workdir, lr=0.004)
    else:   # the same fingerprint, which cannot resume: the new run starts afresh in its folder
        (interrupted_folder / "best.ckpt").write_bytes(b"cut short")
    kept = {path: data for path, data in _files(workdir / "ckpt").items() if path.suffix == ".ckpt"}
    capsys.readouterr()
    with monkeypatch.context() as patch:
        POINTS[point](patch, workdir)
        status = run_stage(train_stage.main, TRAIN)
    err = capsys.readouterr().err
    assert status != 0 and err.count("\n") == 1 and err.startswith("lmpipe: error: "), err
    if point == "refused":
        assert status == 2
        for part in ("train.limit_train_batches=0.001", "leaves 0 of the ", "use at least 0.0"):
            assert part in err, err
    now = _files(workdir / "ckpt")
    assert {path: now.get(path) for path in kept} == kept

    # the next run as before: resumes the interrupted training, or starts the damaged one afresh
    _set_train(workdir, lr=TrainParams().lr, limit_train_batches=1.0)
    assert run_stage(train_stage.main, TRAIN) == 0
    out = capsys.readouterr().out
    said = f"resuming from {interrupted_folder / 'last.ckpt'}" if start != "a damaged folder" else "afresh"
    assert said in out, out
    # once models/gru is written: its folder goes, and those beyond the 3 newest with a last.ckpt
    left = sorted(path.name for path in (workdir / "ckpt").glob("gru-*"))
    assert left == [f"gru-{age:016x}" for age in range(3)], left


# ---- limit_train_batches against the prepared data's size -----------------------------------


def _stream(sentences: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([[BOS_ID, *rng.integers(3, 20, rng.integers(3, 9)), EOS_ID]
                           for _ in range(sentences)]).astype(np.int32)


@pytest.mark.parametrize("cloze", [False, True])
@pytest.mark.parametrize("world", [1, 2])
def test_a_limit_that_leaves_no_batch_is_refused_with_the_least_that_works(cloze, world):
    train, valid = _stream(300), _stream(20, seed=1)
    params = TrainParams(batch_size=4, bptt=8)
    batches = len(train_loader(cloze, train, params, seed=0, world=world))
    least = least_fraction(batches)
    for works in (least, 1.0, float(batches + 5), 2.0):   # a whole number: min(it, batches)
        check_data(cloze, train, valid, params.model_copy(update={"limit_train_batches": works}), world)
    below = float(f"{least * 0.9:.2g}")
    with pytest.raises(ValueError) as refused:
        check_data(cloze, train, valid, params.model_copy(update={"limit_train_batches": below}), world)
    for part in (f"train.limit_train_batches={below:g}", f"0 of the {batches} train batches",
                 f"use at least {least:g}"):
        assert part in str(refused.value), str(refused.value)


def test_the_least_fraction_is_one_batch_by_lightnings_rule():
    for batches in range(1, 20_000):
        least = least_fraction(batches)
        assert int(batches * least) == 1 and least <= 1.1 / batches + 1e-12, batches


# ---- a Lightning refusal while a stage runs -----------------------------------------------------


def test_lightnings_refusal_is_bad_input_naming_the_key(tmp_path, capsys):
    """Lightning's MisconfigurationException (here its limit check, past ours) is exit 2 naming
    the train.* section and the argument, not an unexpected error."""
    params = TrainParams(batch_size=4, bptt=8, max_epochs=1, limit_train_batches=0.001)
    config = ModelConfig.of("gru", ModelParams(cell="gru", embed_dim=4, hidden_dim=4), 20)
    lit = LitLM(RNNLM(config), params, _stream(300), _stream(20, seed=1))

    def stage():
        build_trainer(params, tmp_path / "ckpt", tmp_path, logger=False).fit(lit)
    L.seed_everything(0, verbose=False)
    assert run_stage(stage, []) == 2
    err = capsys.readouterr().err
    assert err.startswith("lmpipe: error: Lightning refuses a train.* setting of params.yaml"), err
    assert "`limit_train_batches" in err and err.count("\n") == 1, err
    assert not (tmp_path / "ckpt").exists()
