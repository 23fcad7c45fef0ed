"""Batching. In: a token stream `<s> w.. </s> <s> ...`. Out: a DDP rank's DataLoaders of causal
windows (batch_size columns walked bptt steps at a time; variable BPTT: Merity et al. 2017 4.1),
of evaluation columns predicting each non-`<s>` token once, or of padded sentences (cloze); `<s>`
targets are IGNORE. check_data: ValueError for too small splits or a limit_train_batches that
leaves no batch. Diagrams: docs/internals.md."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset, Sampler

from pipeline.config import TrainParams
from pipeline.text.vocab import BOS_ID, EOS_ID, sentence_bounds

IGNORE = -100  # torch's cross_entropy ignore_index


class StreamWindows(Dataset):
    """Windows (inputs, targets), each (batch_size, <= bptt), in order. Distributed: the stream
    is cut into world x batch_size columns and rank r reads columns r*B .. (r+1)*B-1 (the same
    number of windows on every rank); of a memory map only the rank's own slice is read."""

    def __init__(self, stream: np.ndarray, batch_size: int, bptt: int, rank: int = 0,
                 world: int = 1, variable: bool = False, seed: int = 0, epoch: int = 0):
        columns = len(stream) // (batch_size * world)
        # (B, N): this rank's rows, a view of the (memory-mapped) stream, made int64 per window
        rows = stream[rank * batch_size * columns:(rank + 1) * batch_size * columns]
        self.data = np.asarray(rows).reshape(batch_size, columns)
        self.starts = np.arange(0, columns - 1, bptt)   # window i starts at starts[i]
        if variable:   # the same cut on every rank: it depends on (seed, epoch) only
            rng = np.random.default_rng([seed, epoch])
            starts, position = [], 0
            while position < columns - 1:
                starts.append(position)
                mean = bptt if rng.random() < 0.95 else bptt / 2
                position += int(min(max(5, int(rng.normal(mean, 5))), bptt + 20))
            self.starts = np.array(starts)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int):
        start = int(self.starts[index])
        end = int(self.starts[index + 1]) if index + 1 < len(self.starts) else self.data.shape[1] - 1
        window = torch.from_numpy(np.array(self.data[:, start:end + 1], dtype=np.int64))
        targets = window[:, 1:]
        return window[:, :-1], targets.masked_fill(targets == BOS_ID, IGNORE)


class ResumeSampler(Sampler):
    """0, 1, .., n-1, starting at `skip` once (resumed mid-epoch); len() stays n (the epoch's)."""

    def __init__(self, n: int, skip: int = 0):
        self.n, self.skip = n, skip

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        skip, self.skip = self.skip, 0
        return iter(range(skip, self.n))


def eval_columns(stream: np.ndarray, num_columns: int):
    """(inputs, targets, positions), each (C, L): every non-`<s>` position of `stream` appears
    exactly once as a target, with its stream index in `positions` (-1 on padding)."""
    starts, _ = sentence_bounds(stream)
    num_columns = max(1, min(num_columns, len(starts)))
    # cut at the sentence start nearest to each equal share of the stream
    wanted = np.arange(1, num_columns) * len(stream) / num_columns
    cuts = np.unique(starts[np.clip(np.searchsorted(starts, wanted), 0, len(starts) - 1)])
    bounds = np.concatenate([[0], cuts[cuts > 0], [len(stream)]]).astype(np.int64)
    lo, hi = bounds[:-1, None], bounds[1:, None]
    positions = lo + 1 + np.arange(int(np.max(hi - lo)) - 1)   # (C, L): each column's targets
    inside = positions < hi
    safe = np.where(inside, positions, 1)
    inputs = np.where(inside, stream[safe - 1], EOS_ID).astype(np.int64)
    targets = np.where(inside, stream[safe], IGNORE).astype(np.int64)
    positions[~inside | (targets == BOS_ID)] = -1
    targets[positions < 0] = IGNORE
    return torch.from_numpy(inputs), torch.from_numpy(targets), torch.from_numpy(positions)


def sentences_of(stream: np.ndarray) -> list[np.ndarray]:
    """Each sentence `<s> x.. </s>` of a stream, as int64 arrays."""
    return list(Sentences(stream))


def pad_sentences(batch: list[np.ndarray]):
    """(tokens (B, L), lengths (B,)) with `</s>` as right padding (never a target)."""
    tokens = pad_sequence([torch.as_tensor(s, dtype=torch.long) for s in batch], batch_first=True,
                          padding_value=EOS_ID)
    return tokens, torch.tensor([len(s) for s in batch])


def cloze_targets(tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Targets aligned with RNNLM.cloze logits: tokens[:, 1:], IGNORE beyond each length."""
    targets = tokens[:, 1:].clone()
    position = torch.arange(1, tokens.shape[1], device=tokens.device).expand_as(targets)
    return targets.masked_fill(position >= lengths.to(tokens.device).unsqueeze(1), IGNORE)


class Sentences(Dataset):
    """The sentences `<s> x.. </s>` of a stream (T,), every `world`-th from `rank`; item i is an
    int64 array (L,) read from the (memory-mapped) stream when asked for: only bounds are held."""

    def __init__(self, stream: np.ndarray, rank: int = 0, world: int = 1):
        starts, ends = sentence_bounds(stream)
        self.stream, self.starts, self.ends = stream, starts[rank::world], ends[rank::world]
        self.lengths = self.ends - self.starts + 1   # tokens of each, `<s>` and `</s>` included

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int) -> np.ndarray:
        return np.asarray(self.stream[self.starts[index]:self.ends[index] + 1], dtype=np.int64)


class BucketBatches(Sampler):
    """Sentence-index batches of similar length: shuffle, sort each pool of `pool` batches by
    length, cut into batches, shuffle the batches. Deterministic given `seed` and the epoch (set
    by set_epoch, else the next per iteration); `skip` drops the first batches once (resuming)."""

    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int, pool: int = 50,
                 skip: int = 0, epoch: int = 0, rank: int = 0, world: int = 1):
        self.lengths, self.batch_size, self.seed, self.pool = np.asarray(lengths), batch_size, seed, pool
        self.epoch, self.skip = epoch, skip
        self.rank, self.world = rank, world   # distributed: every rank the same number of batches

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size) // self.world

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1   # the next iteration is the next epoch unless set_epoch says otherwise
        skip, self.skip = self.skip, 0
        order, size = rng.permutation(len(self.lengths)), self.pool * self.batch_size
        for start in range(0, len(order), size):   # each pool sorted by length
            pool = order[start:start + size]
            order[start:start + size] = pool[np.argsort(self.lengths[pool], kind="stable")]
        batches = np.split(order, range(self.batch_size, len(order), self.batch_size))
        # the same order on every rank; each takes every world-th batch
        order = rng.permutation(len(batches))[self.rank::self.world][:len(self)]
        for index in order[skip:]:
            yield batches[index].tolist()


def check_data(cloze: bool, train_stream: np.ndarray, valid_stream: np.ndarray,
                params: TrainParams, world: int = 1) -> None:
    """Refuse splits too small for the batch shape before any work, saying what to change."""
    fix = "lower train.batch_size or train.bptt, or use a larger corpus / larger split fractions"
    num_train, num_valid = (int(np.sum(stream == BOS_ID)) for stream in (train_stream, valid_stream))
    columns = world * params.batch_size
    length = len(train_stream) // columns
    batches = len(train_loader(cloze, train_stream, params, seed=0, world=world))   # a process's, epoch 0
    problems = [
        (num_valid < world, f"the valid split has {num_valid} sentence(s), fewer than the {world} "
         "training processes; raise split.valid or use a larger corpus"),
        (cloze and batches < 1, f"the train split has {num_train} sentences: fewer than one batch "
         f"of train.batch_size={params.batch_size} per process ({world}); {fix}"),
        (not cloze and length < params.bptt + 1, f"the train split has {len(train_stream):,} "
         f"tokens: cut into train.batch_size={params.batch_size} x {world} process(es) = "
         f"{columns} columns, each holds {length} tokens, fewer than one window of "
         f"train.bptt={params.bptt} (+1 for the targets); {fix}"),
        (int(batches * params.limit_train_batches) < 1,   # Lightning's rule for a fraction
         f"train.limit_train_batches={params.limit_train_batches:g} leaves 0 of the {batches} train "
         f"batches of an epoch{' per process' if world > 1 else ''}; use at least "
         f"{least_fraction(max(batches, 1)):g} or a whole number of batches"),
    ]
    for bad, message in problems:
        if bad:
            raise ValueError(message)


def least_fraction(batches: int) -> float:
    """1/batches rounded up to 2 significant digits: Lightning's int(batches x it) is 1."""
    scale = 10 ** (1 - math.floor(math.log10(1 / batches)))
    return math.ceil(scale / batches) / scale


def train_loader(cloze: bool, stream: np.ndarray, params: TrainParams, seed: int, skip: int = 0,
                 epoch: int = 0, pin_memory: bool = False, rank: int = 0, world: int = 1) -> DataLoader:
    """Causal: ordered stream windows; cloze: shuffled batches of padded sentences of similar
    length. `skip` starts at that batch of `epoch` (resuming); its own generator keeps the global
    RNG (dropout masks) as in an uninterrupted run."""
    generator = torch.Generator().manual_seed(seed)
    if cloze:
        sentences = Sentences(stream)
        batches = BucketBatches(sentences.lengths, params.batch_size, seed, skip=skip, epoch=epoch,
                                rank=rank, world=world)
        return DataLoader(sentences, batch_sampler=batches,
                          collate_fn=pad_sentences, generator=generator, pin_memory=pin_memory)
    windows = StreamWindows(stream, params.batch_size, params.bptt, rank, world,
                            variable=params.variable_bptt, seed=seed, epoch=epoch)
    return DataLoader(windows, batch_size=None, sampler=ResumeSampler(len(windows), skip),
                      generator=generator, pin_memory=pin_memory)


def valid_loader(cloze: bool, stream: np.ndarray, params: TrainParams, pin_memory: bool = False,
                 rank: int = 0, world: int = 1) -> DataLoader:
    """Every non-`<s>` token predicted once (the evaluation's batching); a rank its own share."""
    if cloze:
        sentences = Sentences(stream, rank, world)
        return DataLoader(sentences, batch_size=params.eval_batch_size,
                          collate_fn=pad_sentences, pin_memory=pin_memory)
    inputs, targets, _ = eval_columns(stream, params.eval_batch_size)
    windows = zip(inputs[rank::world].split(params.bptt, 1), targets[rank::world].split(params.bptt, 1),
                  strict=True)
    return DataLoader(list(windows), batch_size=None, pin_memory=pin_memory)
