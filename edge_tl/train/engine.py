"""The fast path around fastai: in-memory tokenization, length-bucketed loaders, bf16 autocast
on CPU, head-only training on cached encoder features, and batch skipping for --resume.

Nothing here writes to disk: fastai's tokenize_df/from_folder caches are never used."""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import fastai.callback.schedule  # noqa: F401  (patches Learner.fit_one_cycle)
import psutil
import torch
from fastai.callback.core import Callback, CancelBatchException
from fastai.data.core import DataLoaders, TfmdDL
from fastai.data.transforms import TensorCategory
from fastai.text.core import TokenizeWithRules, WordTokenizer, parallel_tokenize
from fastai.text.data import LMDataLoader, SortedDL, TensorText, make_vocab, pad_input_chunk
from fastai.text.models.core import masked_concat_pool

PAD = 1  # fastai's xxpad id in every vocab make_vocab builds


# ---------------------------------------------------------------- tokens, in memory only


def tokenize(texts: Sequence[str], workers: int = 0) -> list[list[str]]:
    """fastai's default rules + spaCy word tokenizer, in memory (workers>0: pipes, no files)."""
    texts = list(texts)
    if workers > 0 and len(texts) >= 2000:
        out: list[list[str]] = [[] for _ in texts]
        for i, toks in parallel_tokenize(texts, n_workers=workers):
            out[i] = list(toks)
        return out
    return [list(t) for t in TokenizeWithRules(WordTokenizer())(texts)]


def build_vocab(docs: Sequence[Sequence[str]], min_freq: int = 3, max_vocab: int = 60000):
    """fastai's Numericalize rules: specials first, then tokens by frequency, padded to x8."""
    count: Counter = Counter()
    for d in docs:
        count.update(d)
    return make_vocab(count, min_freq=min_freq, max_vocab=max_vocab)


def numericalize(docs: Sequence[Sequence[str]], vocab: Sequence[str]) -> list[torch.Tensor]:
    """Token lists -> int64 id tensors (unknown tokens -> 0, xxunk)."""
    o2i = {w: i for i, w in enumerate(vocab)}
    return [TensorText(torch.tensor([o2i.get(t, 0) for t in d], dtype=torch.long)) for d in docs]


def auto_threads(cores: int) -> int:
    """Compute threads for this run: the cores other processes leave idle now (at least 1)."""
    return thread_plan(cores)[0]


def thread_plan(cores: int, interval: float = 0.2) -> tuple[int, str]:
    """Threads for this run and why: the usable cores that are idle right now (at least 1).

    OpenMP threads spin while waiting for each other; on a shared CPU an extra thread that
    has no core of its own makes every step slower (measured here: a 3-layer AWD-LSTM LM
    step ran at 2,800 tokens/s with 1 thread and 1,000 with 2 at load average 12). The load
    average lags by minutes (an idle machine right after a job ended still reads busy), so the
    CPU use of the usable cores is sampled over `interval` seconds instead; this process
    sleeps meanwhile, so what is busy belongs to other processes."""
    cores = max(1, cores)
    busy = busy_cores(interval)
    if busy is None:
        return cores, f"all {cores} cores: CPU use could not be measured"
    threads = max(1, min(cores, int(cores - busy + 0.5)))
    if threads == cores:
        return threads, f"all {cores} cores, idle now"
    return threads, (
        f"{busy:.1f} of {cores} cores busy with other processes now; --threads N overrides"
    )


def busy_cores(interval: float = 0.2) -> float | None:
    """How many of the cores this process may use are busy (CPU use over `interval` s)."""
    try:
        per_cpu = psutil.cpu_percent(interval=interval, percpu=True)
    except (OSError, RuntimeError, AttributeError):
        return None
    if not per_cpu:
        return None
    try:
        usable = [per_cpu[i] for i in sorted(os.sched_getaffinity(0)) if i < len(per_cpu)]
    except (AttributeError, OSError):  # no sched_getaffinity (macOS): every core
        usable = per_cpu
    return sum(usable or per_cpu) / 100.0


# ---------------------------------------------------------------- data loaders


def lm_loader(ids: list[torch.Tensor], bs: int, bptt: int, shuffle: bool, device: Any = None):
    """fastai's LMDataLoader over in-memory id tensors (docs concatenated, shuffled per epoch)."""
    return LMDataLoader(
        ids,
        lens=[len(t) for t in ids],
        bs=bs,
        seq_len=bptt,
        shuffle=shuffle,
        drop_last=shuffle,
        num_workers=0,
        device=device,
    )


def clas_loader(
    ids: list[torch.Tensor],
    y: list[int],
    bs: int,
    bptt: int,
    shuffle: bool,
    device: Any = None,
    workers: int = 0,
):
    """fastai's SortedDL (length bucketing) with chunk padding, like text_classifier dls."""
    items = [(x, TensorCategory(c)) for x, c in zip(ids, y, strict=True)]
    return SortedDL(
        items,
        res=[len(x) for x in ids],
        bs=bs,
        shuffle=shuffle,
        drop_last=False,
        before_batch=lambda b: pad_input_chunk(b, pad_idx=PAD, pad_first=True, seq_len=bptt),
        num_workers=workers,
        device=device,
    )


def dls(train, valid, device: Any = None) -> DataLoaders:
    """Pair two loaders."""
    return DataLoaders(train, valid, device=device)


# ---------------------------------------------------------------- bf16 autocast on CPU


class Autocast(Callback):
    """torch.autocast around forward + loss (fastai's MixedPrecision is CUDA-only)."""

    order = 10

    def __init__(self, device: str = "cpu", dtype: torch.dtype = torch.bfloat16) -> None:
        self.device, self.dtype = device, dtype
        self._ctx: Any = None

    def before_batch(self) -> None:
        self._ctx = torch.autocast(self.device, dtype=self.dtype)
        self._ctx.__enter__()

    def after_pred(self) -> None:
        # Loss and the RNN regulariser in fp32, as MixedPrecision does.
        self.learn.pred = _to_float(self.pred)

    def after_loss(self) -> None:
        self._exit()

    def after_batch(self) -> None:
        self._exit()

    def after_cancel_batch(self) -> None:
        self._exit()

    def _exit(self) -> None:
        if self._ctx is not None:
            self._ctx.__exit__(None, None, None)
            self._ctx = None


def _to_float(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.float() if x.is_floating_point() else x
    if isinstance(x, list | tuple):
        return type(x)(_to_float(o) for o in x)
    return x


def autocast_ctx(dtype: str, device: str = "cpu") -> contextlib.AbstractContextManager:
    """A context for inference-time autocast ("bf16" / "fp16"), or a no-op for fp32."""
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device, dtype=torch.bfloat16 if dtype == "bf16" else torch.float16)


# ---------------------------------------------------------------- resume and checkpoints


class SkipBatches(Callback):
    """Skip the first `n` training batches of the first epoch run (resume mid-epoch).

    Skipped batches still advance fastai's schedule counters, so the one-cycle position is
    right; afterwards the RNG state saved at the checkpoint is restored."""

    order = 0

    def __init__(self, n: int, on_done: Callable[[], None] | None = None) -> None:
        self.n, self.on_done, self.done = n, on_done, n == 0

    def before_batch(self) -> None:
        if self.done or not self.training:
            return
        if self.iter < self.n:
            raise CancelBatchException()
        self.done = True
        if self.on_done is not None:
            self.on_done()


class EveryEpochAndMinutes(Callback):
    """Call `save(epoch, batch_done, epoch_finished)` after every epoch and every N minutes."""

    order = 90  # after the Recorder has logged the epoch

    def __init__(
        self,
        save: Callable[[int, int, bool], None],
        minutes: float,
        on_epoch_start: Callable[[int], None] | None = None,
    ) -> None:
        self.save, self.seconds, self.on_epoch_start = save, minutes * 60.0, on_epoch_start
        self.last = time.monotonic()

    def before_epoch(self) -> None:
        if self.on_epoch_start is not None:
            self.on_epoch_start(self.epoch)

    def after_batch(self) -> None:
        if not self.training or self.iter + 1 >= self.n_iter:
            return
        if time.monotonic() - self.last >= self.seconds:
            self.save(self.epoch, self.iter + 1, False)
            self.last = time.monotonic()

    def after_epoch(self) -> None:
        self.save(self.epoch, 0, True)
        self.last = time.monotonic()


# ---------------------------------------------------------------- cached encoder features


@torch.no_grad()
def pooled_features(
    encoder: torch.nn.Module,
    ids: list[torch.Tensor],
    bs: int,
    bptt: int,
    dtype: str,
    train_mode: bool,
    device: Any = "cpu",
) -> torch.Tensor:
    """[last, max, mean] pooled SentenceEncoder outputs of every doc, (n_docs, 3*emb) fp32.

    Docs are processed longest first, so a batch holds docs of similar length (little padding);
    train_mode=True keeps the encoder's dropout on, as fastai's frozen-encoder epoch does."""
    was = encoder.training
    encoder.train(train_mode)
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    out = torch.empty(len(ids), 0)
    chunks = []
    try:
        for s in range(0, len(order), bs):
            idx = order[s : s + bs]
            batch = pad_input_chunk(
                [(ids[i],) for i in idx], pad_idx=PAD, pad_first=True, seq_len=bptt
            )
            x = torch.stack([b[0] for b in batch]).to(device)  # (bs, padded_len)
            with autocast_ctx(dtype, str(torch.device(device).type)):
                o, mask = encoder(x)  # (bs, kept_len, emb), (bs, kept_len)
                chunks.append(masked_concat_pool(o.float(), mask, bptt).float().cpu())
    finally:
        encoder.train(was)
    if chunks:
        feats = torch.cat(chunks)  # (n_docs, 3*emb) in `order`
        out = torch.empty_like(feats)
        out[torch.tensor(order)] = feats
    return out


def feature_loader(feats: torch.Tensor, y: Sequence[int], bs: int, shuffle: bool, device=None):
    """A fastai loader over (feature vector, class) pairs for head-only training."""
    items = [(feats[i], TensorCategory(c)) for i, c in enumerate(y)]
    return TfmdDL(
        items,
        bs=bs,
        shuffle=shuffle,
        drop_last=shuffle and len(items) > bs,
        num_workers=0,
        device=device,
    )


def copy_opt_state(src_opt: Any, dst_opt: Any, params: Sequence[torch.nn.Parameter]) -> None:
    """Carry Adam moments of `params` from one fastai Optimizer to another."""
    for p in params:
        if p in src_opt.state:
            dst_opt.state[p] = src_opt.state[p]
