"""The engine: a batch of sequence slots over preallocated caches, stepped by draft -> verify -> accept.

Sequences join (prefill into a free slot) and leave between steps, so the same object serves batch
generation, streaming and the HTTP server's continuous batching. One host sync per step: the
accepted counts and tokens of every row, read together.
"""

from __future__ import annotations

import itertools
import math
import operator
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import replace

import torch

from ..errors import ConfigError, RequestError
from ..models.compat import check_compatible
from ..models.draft_vocab import COUNTS_FILE, always_kept, auto_size, kept_ids
from ..models.drafter import DFlashDraft, MaskSpec
from ..models.target import TargetModel
from . import sampling
from .block_size import BlockSizeController
from .draft_cache import DraftCache
from .graphs import GraphCache
from .sampling import BatchSampling, SamplingParams
from .sequence import GenerationResult, Sequence, Update

_ALIGN = 64  # prefill attends over cache[:round_up(prompt, 64)]
_MIN_KV = 256  # decode attends over cache[:power of two >= longest sequence + block], at least this


def _round_up(x: int, k: int) -> int:
    return (x + k - 1) // k * k


def _prefill_groups(items: list, budget: int) -> Iterator[list]:
    """Consecutive runs of (slot, seq), sorted by prompt length, of at most `budget` padded tokens each."""
    group: list = []
    for item in items:
        width = len(item[1].prompt_ids)  # sorted: the newest is the longest
        if group and (len(group) + 1) * width > budget:
            yield group
            group = []
        group.append(item)
    if group:
        yield group


def _filters(params: SamplingParams) -> bool:
    """Whether a request's sampling needs the top-p / top-k filter (a sort over the vocabulary)."""
    return not params.greedy and (params.top_p < 1.0 or params.top_k > 0)


def _bucket(x: int, cap: int, floor: int = 1) -> int:
    """Next power of two >= x (>= floor), capped: few distinct shapes, so few CUDA graphs."""
    b = floor
    while b < x:
        b *= 2
    return min(b, cap)


def _token_ids(prompt) -> list[int]:
    """A prompt as Python ints. Text was refused as 'token ids outside the vocabulary', and a tensor or array of
    ids failed on its truth value ('Boolean value of Tensor ... is ambiguous')."""
    if isinstance(prompt, str):
        raise RequestError("a prompt is a list of token ids, not text: encode it first "
                           "(Generator.chat_prompt(messages) or tokenizer.encode(text))")
    try:
        return [operator.index(i) for i in prompt]
    except TypeError as exc:
        raise RequestError(f"a prompt is a list of integer token ids ({exc})") from exc


def _check_capacity(max_batch: int, max_length: int | None) -> None:
    """Zero slots would leave every request waiting forever (a hang); a context under 2 holds no answer."""
    if max_batch < 1:
        raise ConfigError(f"max_batch (batch size) must be >= 1, got {max_batch}")
    if max_length is not None and max_length < 2:
        raise ConfigError(f"max_length must be >= 2 (prompt + answer tokens), got {max_length}")


class Generator:
    """DFlash (or plain autoregressive) generation over a static batch of slots."""

    def __init__(self, target: TargetModel, draft: DFlashDraft | None = None, tokenizer=None, *,
                 block_size: int | None = None, max_batch: int = 8, max_length: int | None = None,
                 speculative: bool = True, cuda_graphs: bool = True, adaptive_block_size: bool | None = None,
                 compile: bool = False, prefill_tokens: int = 8192, draft_vocab: int | None = None):
        if draft is not None:
            check_compatible(target, draft)
        self.target, self.draft = target, draft
        self.tokenizer = tokenizer if tokenizer is not None else target.tokenizer
        if block_size is not None and draft is not None and not 1 <= block_size <= draft.block_size:
            raise RequestError(f"block_size {block_size} must be in 1..{draft.block_size} (the drafter's block size)")
        _check_capacity(max_batch, max_length)
        self.block_size = block_size or (draft.block_size if draft is not None else 1)
        # adaptive unless the caller fixed the block size: see block_size.py
        adaptive = block_size is None if adaptive_block_size is None else adaptive_block_size
        self.controller = BlockSizeController(self.block_size, fixed=None if adaptive else self.block_size)
        self.max_batch = max_batch
        self.prefill_tokens = prefill_tokens  # padded prompt tokens per prefill forward
        # admit only once this many slots are free (or the queue fits): a prefill is an eager forward, so
        # throughput jobs (datagen) batch admissions instead of paying one per finished sequence
        self.admit_min = 1
        self.max_length = min(max_length or 4096, target.max_positions)
        self.speculative = speculative and draft is not None and self.block_size > 1
        self.device = target.device
        self.slots: list[Sequence | None] = [None] * max_batch
        # per slot: holds a sequence that samples / that needs the top-p/top-k filter. Kept with the slots, so a
        # step reads its sampling mode from a slice instead of asking every sequence
        self.slot_sampled = [False] * max_batch
        self.slot_filtered = [False] * max_batch
        self.slot_seeded = [False] * max_batch  # holds a request with a seed (its uniforms: sampling.hash_uniforms)
        self.waiting: deque[Sequence] = deque()
        self.sequences: dict[int, Sequence] = {}
        self._inboxes: dict[int, deque[Update]] = {}  # per streamed request: its updates not yet yielded (stream())
        self._ids = itertools.count()
        self._allocated = False
        self.graphs = GraphCache(cuda_graphs and self.device.type == "cuda")
        if compile:
            target.compile_layers()
            if draft is not None:
                for layer in draft.layers:
                    layer.compile(dynamic=False)
        self.profile: dict[str, float] | None = None  # set to {} to collect per-phase times (adds syncs)
        # wall seconds of admission (prefill) and of decode steps, rows stepped: free (both end in a host sync)
        self.timing = {"admit_s": 0.0, "decode_s": 0.0, "steps": 0, "rows": 0}
        self.last_block_size = self.block_size
        self.defer_absorb = True  # single-token steps leave features pending (see _must_absorb)
        self.oracle_accept: int | None = None  # oracle mode: drafts replayed from reference tokens
        self.oracle_tau: float | None = None
        self._oracle_steps = 0
        self.oracle_force = False
        self.draft_ids: torch.Tensor | None = None  # pruned draft vocabulary: the kept token ids, sorted
        self.draft_head: torch.Tensor | None = None  # ... and their rows of the LM head
        if draft is not None:
            self._prune_draft_vocab(draft_vocab)

    def _prune_draft_vocab(self, size: int | None) -> None:
        """Drafts from the most frequent tokens only (models/draft_vocab.py). `size` None: as the drafter's token
        counts suggest (every token if it ships none); 0: every token; N: the N most frequent."""
        counts, vocab = self.draft.token_counts, self.target.vocab_size
        if size == 0 or (size is None and counts is None):
            return
        if size is not None and size < 0:
            raise ConfigError(f"draft_vocab must be >= 0 (0 = the whole vocabulary), got {size}")
        if counts is None:
            raise ConfigError(f"draft_vocab {size}: this drafter ships no {COUNTS_FILE} to rank tokens by; "
                              "use 0 (the whole vocabulary)")
        if counts.numel() != vocab:
            raise ConfigError(f"the drafter's token counts cover {counts.numel()} ids, the target has {vocab}")
        size = auto_size(counts) if size is None else size
        if size >= vocab:
            return
        always = always_kept(self.target.stop_token_ids(), self.tokenizer)
        self.draft_ids = kept_ids(counts, size, always).to(self.device)
        self.draft_head = self.target.lm_head_weight[self.draft_ids].to(self.draft.dtype)

    # ----------------------------------------------------------------- storage
    def allocate(self) -> None:
        """Preallocate the caches (otherwise done by the first step)."""
        if self._allocated:
            return
        t, dev = self.target, self.device
        # slack for a block (or the drafter's fixed context chunk) written past the longest sequence; a whole
        # number of _ALIGN rows, since the longest attention bucket is the capacity itself: an odd length there
        # (max_length 1395) made every 8B decode step 25% slower on an H100 (misaligned bf16 strides)
        self.capacity = _round_up(self.max_length + (self.draft.block_size if self.draft is not None else 1), _ALIGN)
        t.allocate(self.max_batch, self.capacity)
        b = self.max_batch
        self.anchor_tok = torch.zeros(b, dtype=torch.long, device=dev)
        self.anchor_pos = torch.zeros(b, dtype=torch.long, device=dev)
        self.active = torch.zeros(b, dtype=torch.bool, device=dev)
        # per-slot sampling settings and random numbers: persistent, so CUDA graphs can read them
        self.s_temp = torch.zeros(b, dtype=torch.float32, device=dev)
        self.s_top_p = torch.ones(b, dtype=torch.float32, device=dev)
        self.s_top_k = torch.zeros(b, dtype=torch.long, device=dev)
        self.uniforms = torch.zeros(b, 2 * max(self.block_size, 1), dtype=torch.float32, device=dev)
        self.s_seeded = torch.zeros(b, dtype=torch.bool, device=dev)  # seeded rows' streams: seed, numbers drawn
        self.s_seed = torch.zeros(b, dtype=torch.long, device=dev)
        self.s_drawn = torch.zeros(b, dtype=torch.long, device=dev)
        if self.draft is not None:
            self.dcache = DraftCache(self.draft, b, self.capacity)
            width = len(self.draft.target_layer_ids) * t.hidden_size
            self.pend_feats = torch.zeros(b, self.draft.block_size, width, dtype=t.dtype, device=dev)
            self.pend_pos = torch.zeros(b, dtype=torch.long, device=dev)  # position of pend_feats[:, 0]
            self.pend_len = torch.zeros(b, dtype=torch.long, device=dev)  # valid pending features per row
            self.oracle_table = torch.zeros(b, self.capacity, dtype=torch.long, device=dev)
        self.pend_host = [0] * b  # the same counts on the host, to decide when a chunk must be absorbed
        self._allocated = True

    # ----------------------------------------------------------------- requests
    def set_oracle(self, tau: float | None, force: bool = False) -> None:
        """Benchmark the engine itself: drafts replay each request's `reference` tokens, cut after tau - 1.

        Without `force` the target still judges the drafts (a test of verification: a correct reference
        gives exactly tau tokens per step). With `force` exactly tau are committed whatever the target
        says: for timing the engine at a chosen tau on random-weight targets, whose near-flat bf16
        logits make any replay disagree. Drafter and target still run in full either way.
        A fractional tau (6.5) alternates the two nearest whole lengths so that their running mean stays on it."""
        if tau is not None and not 1 <= tau <= self.block_size:
            raise RequestError(f"oracle tau must be in 1..{self.block_size}")
        self.oracle_tau, self._oracle_steps = tau, 0
        self.oracle_accept = None if tau is None else math.floor(tau) - 1
        self.oracle_force = force and tau is not None

    def _next_oracle_accept(self) -> None:
        """This step's whole length: step n commits floor((n+1) tau) - floor(n tau) tokens."""
        n, tau = self._oracle_steps, self.oracle_tau
        self.oracle_accept = math.floor((n + 1) * tau + 1e-9) - math.floor(n * tau + 1e-9) - 1
        self._oracle_steps += 1

    def add_request(self, prompt_ids: list[int], params: SamplingParams | None = None,
                    reference: list[int] | None = None, stream_text: bool = True) -> int:
        """Queue a request; it joins the batch at the next step with a free slot. Returns its id.

        `reference`: the expected continuation, only used in oracle mode (`set_oracle`).
        `stream_text=False`: its updates carry no text (the result has it all): saves a detokenisation per step."""
        params = params or SamplingParams()
        params.validate()
        prompt_ids = _token_ids(prompt_ids)
        if not prompt_ids:
            raise RequestError("empty prompt: give at least one token")
        vocab = self.target.vocab_size
        if any(i < 0 or i >= vocab for i in prompt_ids):
            raise RequestError(f"prompt has token ids outside the vocabulary 0..{vocab - 1}")
        if len(prompt_ids) >= self.max_length:
            raise RequestError(f"prompt has {len(prompt_ids)} tokens; the context holds {self.max_length} "
                               "(prompt + generated). Shorten the prompt or raise max_length.")
        if params.stop and self.tokenizer is None:  # else the step that commits its first token fails the batch
            raise RequestError("stop strings need a tokenizer to read the text; this engine has none "
                               "(use stop_token_ids)")
        if params.top_k >= vocab:  # keeps every token, i.e. off (and a huge one would not fit the int64 tensor)
            params = replace(params, top_k=0)
        # ignore_eos drops the model's own end tokens; ids the caller names still stop (as in vLLM)
        stop_ids = params.stop_token_ids
        if stop_ids is None:
            stop_ids = () if params.ignore_eos else self.target.stop_token_ids()
        seq = Sequence(id=next(self._ids), prompt_ids=prompt_ids, params=params,
                       stop_ids=frozenset(stop_ids),
                       limit=min(params.max_new_tokens, self.max_length - len(prompt_ids)),
                       tokenizer=self.tokenizer)
        seq.reference, seq.stream_text = reference, stream_text
        self.sequences[seq.id] = seq
        self.waiting.append(seq)
        return seq.id

    def abort(self, seq_id: int) -> None:
        """Stop a request now and free its slot (also one that finished in a step that then failed)."""
        seq = self.sequences.get(seq_id)
        if seq is None:
            return
        if not seq.finished:
            seq.finish_reason = "abort"
            seq.t_end = time.perf_counter()
        if seq in self.waiting:
            self.waiting.remove(seq)
        self._release(seq)

    def pop_result(self, seq_id: int) -> GenerationResult:
        return self.sequences.pop(seq_id).result()

    def has_work(self) -> bool:
        return bool(self.waiting) or any(s is not None for s in self.slots)

    @property
    def num_running(self) -> int:
        return sum(s is not None for s in self.slots)

    def _release(self, seq: Sequence) -> None:
        self._free([i for i, s in enumerate(self.slots) if s is seq])

    def _free(self, slots: list[int]) -> None:
        """Empty these slots; their rows stop advancing (one device write for all of them)."""
        if not slots:
            return
        for i in slots:
            self.slots[i] = None
            self.slot_sampled[i] = self.slot_filtered[i] = self.slot_seeded[i] = False
        with torch.inference_mode():  # engine buffers are inference tensors
            index = slots[0] if len(slots) == 1 else torch.tensor(slots, device=self.device)
            self.active[index] = False
            # a row stopped inside a block at the context limit has its anchor past max_length: stepped while
            # empty (a later slot still runs), its block would be written past the end of the caches
            self.anchor_pos[index] = 0

    # --------------------------------------------------------------------- step
    @torch.inference_mode()
    def step(self) -> list[Update]:
        """Admit waiting requests, then advance every running sequence by one draft/verify (or AR) step."""
        self.allocate()
        t_admit = time.perf_counter()
        updates = self._admit()
        running, last_pos = self._running()
        t0 = time.perf_counter()
        self.timing["admit_s"] += t0 - t_admit
        if running:
            rows = _bucket(running[-1][0] + 1, self.max_batch)
            greedy = not any(self.slot_sampled[:rows])
            filtered = any(self.slot_filtered[:rows])
            size = self.controller.choose(rows) if self.speculative else 1
            kv_len = _bucket(last_pos + size, self.capacity, _MIN_KV)
            if not greedy:
                self._fill_uniforms(0, rows, 2 * size)
            absorb = self._must_absorb(running, size)
            if self.oracle_tau is not None and self.speculative:
                self._next_oracle_accept()
            key = (rows, kv_len, size, greedy, filtered, absorb, self.speculative, self.oracle_accept,
                   self.oracle_force)
            self._tick("other")
            body = lambda: self._step_body(rows, kv_len, size, greedy, filtered, absorb)  # noqa: E731
            counts, tokens = self.graphs.run(key, body) if self.profile is None else body()
            host = torch.cat([counts[:, None], tokens], dim=1).tolist()  # the step's one sync
            self._tick("step")
            self.timing["decode_s"] += time.perf_counter() - t0
            self.timing["steps"] += 1
            self.timing["rows"] += len(running)
            first = len(updates)  # the running rows' updates follow the admitted ones
            pend, speculative = self.pend_host, self.speculative
            for i, seq in running:
                row = host[i]  # [accepted, tokens...]: accepted + 1 of them are real
                committed = row[0] + 1
                pend[i] = (0 if absorb else pend[i]) + committed
                updates.append(self._update(seq, seq.extend(row[1:1 + committed], speculative)))
            if speculative:  # steps that compiled or captured a graph say nothing about step cost
                seconds = time.perf_counter() - t0 if self.graphs.replayed or self.profile is not None else None
                self.controller.observe(rows, size, seconds, [len(u.token_ids) for u in updates[first:]])
            self.last_block_size = size
        self._free([i for i, s in enumerate(self.slots) if s is not None and s.finish_reason is not None])
        if self._inboxes:  # whoever ran this step, each stream gets its own request's updates
            for update in updates:
                inbox = self._inboxes.get(update.seq_id)
                if inbox is not None:
                    inbox.append(update)
        return updates

    def _running(self) -> tuple[list[tuple[int, Sequence]], int]:
        """The unfinished sequences with their slots, and the furthest anchor position among them."""
        running = [(i, s) for i, s in enumerate(self.slots) if s is not None and s.finish_reason is None]
        return running, max([s.anchor_pos for _, s in running], default=0)

    def _update(self, seq: Sequence, kept: list[int]) -> Update:
        text = seq.text_delta() if seq.stream_text else ""  # detokenising costs host time every step
        reason = seq.finish_reason
        return Update(seq.id, kept, text, reason is not None, reason)

    def _admit(self) -> list[Update]:
        """Move waiting requests into free slots; prompts of similar length prefill together."""
        admitted = []
        free = self.slots.count(None)
        if free < min(self.admit_min, len(self.waiting)) and free < len(self.slots):
            return admitted
        while self.waiting and None in self.slots:
            seq = self.waiting.popleft()
            slot = self.slots.index(None)
            self.slots[slot] = seq
            self.slot_sampled[slot] = not seq.params.greedy
            self.slot_filtered[slot] = _filters(seq.params)
            self.slot_seeded[slot] = seq.params.seed is not None
            admitted.append((slot, seq))
        firsts: dict[int, int] = {}
        for group in _prefill_groups(sorted(admitted, key=lambda x: len(x[1].prompt_ids)), self.prefill_tokens):
            firsts.update(zip((seq.id for _, seq in group), self._prefill(group), strict=True))
        return [self._update(seq, seq.extend([firsts[seq.id]], speculative_step=False)) for _, seq in admitted]

    def _prefill(self, group: list[tuple[int, Sequence]]) -> list[int]:
        """One eager target forward over the group's prompts (right-padded); returns their first tokens.

        Padding writes junk K/V at positions >= a prompt's length: never read before being rewritten."""
        dev = self.device
        slots = [slot for slot, _ in group]
        lengths = [len(seq.prompt_ids) for _, seq in group]
        # padded to a multiple of _ALIGN: few distinct prefill shapes, so a new prompt length does not pay
        # first-use costs (GEMM heuristics, allocator growth) that cost ~40 ms of time to first token on a GPU
        width = min(_round_up(max(lengths), _ALIGN), self.capacity)
        params = [seq.params for _, seq in group]  # the slots' sampling settings, one write per setting
        slot_t = torch.tensor(slots, device=dev)
        self.s_temp[slot_t] = torch.tensor([p.temperature for p in params], dtype=torch.float32, device=dev)
        self.s_top_p[slot_t] = torch.tensor([p.top_p for p in params], dtype=torch.float32, device=dev)
        self.s_top_k[slot_t] = torch.tensor([p.top_k for p in params], device=dev)
        self.s_seeded[slot_t] = torch.tensor([p.seed is not None for p in params], device=dev)
        self.s_seed[slot_t] = torch.tensor([sampling.as_int64(p.seed or 0) for p in params], device=dev)
        self.s_drawn[slot_t] = 0  # the first token's draw below starts the stream
        ids = torch.zeros(len(group), width, dtype=torch.long)
        for row, (_, seq) in enumerate(group):
            ids[row, :lengths[row]] = torch.tensor(seq.prompt_ids)
        ids = ids.to(dev)
        pos = torch.arange(width, device=dev)[None].expand(len(group), -1)
        last = sorted({n - 1 for n in lengths})  # logits only where a prompt ends
        keep = torch.tensor(last, device=dev)
        column = [last.index(n - 1) for n in lengths]
        slot_arg = slots[0] if len(group) == 1 else torch.tensor(slots, device=dev)
        layer_ids = self.draft.target_layer_ids if self.speculative else None
        length_t = torch.tensor(lengths, device=dev)
        with self.target.eager():
            logits, feats = self.target.forward(ids, pos, slot=slot_arg, logits_to_keep=keep, layer_ids=layer_ids,
                                                kv_len=width, prompt_lengths=length_t)
        firsts = []
        for row, (slot, seq) in enumerate(group):
            row_logits = logits[row:row + 1, column[row]:column[row] + 1]  # [1, 1, V]
            if seq.params.greedy:
                firsts.append(row_logits[0, 0].argmax())
            else:
                s = self._sampling(slot, slot + 1, _filters(seq.params))
                self._fill_uniforms(slot, slot + 1, 1)
                firsts.append(sampling.sample(sampling.probs(row_logits, s)[:, 0], self.uniforms[slot:slot + 1, 0])[0])
        first = torch.stack(firsts)
        if self.speculative:
            ctx = self.draft.project_context(feats.to(self.draft.dtype))
            self.dcache.write(self.draft.context_kv(ctx, pos), pos, slot=slot_t)
            self.pend_feats[slot_t] = 0
            self.pend_pos[slot_t] = length_t  # nothing pending: a junk chunk written at >= n is harmless
            self.pend_len[slot_t] = 0
        for slot in slots:
            self.pend_host[slot] = 0
        if self.oracle_accept is not None:
            for row, (slot, seq) in enumerate(group):
                ref = (seq.prompt_ids + [0] + list(seq.reference or [])[1:])[:self.capacity]
                self.oracle_table[slot].zero_()
                self.oracle_table[slot, :len(ref)] = torch.tensor(ref, device=dev)
                self.oracle_table[slot, lengths[row]] = first[row]
        self.anchor_tok[slot_t] = first
        self.anchor_pos[slot_t] = length_t
        self.active[slot_t] = True
        return first.tolist()

    # ------------------------------------------------------------------ kernels
    def _fill_uniforms(self, lo: int, hi: int, width: int) -> None:
        """Random numbers for slots lo..hi-1, `width` per row. A seeded row's are the next numbers of its own
        stream (sampling.hash_uniforms), whatever slot it is in and whatever else is batched; all rows at once."""
        block = self.uniforms[lo:hi, :width]
        seeded = self.slot_seeded[lo:hi]
        if not all(seeded):
            block.uniform_()
        if any(seeded):
            drawn = self.s_drawn[lo:hi]
            hashed = sampling.hash_uniforms(self.s_seed[lo:hi], drawn, width)
            block.copy_(hashed if all(seeded) else torch.where(self.s_seeded[lo:hi, None], hashed, block))
            drawn += width  # every row's count: an unseeded row's is never read (reset at admission)

    def _sampling(self, lo: int, hi: int, filtered: bool) -> BatchSampling:
        """Rows lo..hi-1; `filtered`: some row uses top-p/top-k (else the vocabulary sort is skipped)."""
        temp = self.s_temp[lo:hi]
        return BatchSampling(temperature=temp, top_p=self.s_top_p[lo:hi], top_k=self.s_top_k[lo:hi],
                             greedy=temp == 0, all_greedy=False, needs_filter=filtered)

    def _tick(self, name: str) -> None:
        if self.profile is None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        last = self.profile.get("_t", now)
        self.profile[name] = self.profile.get(name, 0.0) + (now - last)
        self.profile["_t"] = now

    def _must_absorb(self, running: list[tuple[int, Sequence]], size: int) -> bool:
        """Whether this step first moves the pending target features into the drafter's cache.

        A drafting step needs the whole context, so it always does. Single-token steps (the adaptive
        block size's fallback) draft nothing: their features wait in the pending buffer until it is full,
        so a run of them pays one absorption per chunk instead of one per token."""
        if not self.speculative:
            return False
        chunk = self.pend_feats.shape[1]
        return size > 1 or not self.defer_absorb or max(self.pend_host[i] for i, _ in running) + size > chunk

    def _step_body(self, rows: int, kv_len: int, size: int, greedy: bool, filtered: bool,
                   absorb: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """One step on rows 0..rows-1 from persistent buffers only (CUDA-graph safe).

        Returns (accepted drafts [rows], committed tokens [rows, size]; the first accepted + 1 are real).
        """
        draft, target = self.draft, self.target
        s = None if greedy else self._sampling(0, rows, filtered)
        anchor_pos = self.anchor_pos[:rows]
        offsets = torch.arange(max(size, 1), device=self.device)
        block_pos = anchor_pos[:, None] + offsets  # [b, T]
        block = self.anchor_tok[:rows, None].repeat(1, size)
        drafts = q = None
        chunk = self.pend_feats.shape[1] if self.speculative else 0
        if self.speculative and absorb:
            # 1. the drafter absorbs the context features accepted since the last absorption (fixed chunk)
            pend_pos = self.pend_pos[:rows, None] + torch.arange(chunk, device=self.device)
            ctx = draft.project_context(self.pend_feats[:rows].to(draft.dtype))
            self.dcache.write(draft.context_kv(ctx, pend_pos), pend_pos)
        if size > 1:
            # 2. one parallel pass drafts the whole block
            block[:, 1:] = draft.mask_token_id
            keys = torch.arange(kv_len, device=self.device)[None].expand(rows, -1)
            spec = MaskSpec(q_pos=block_pos, k_pos=keys, k_valid=keys < anchor_pos[:, None])
            noise = target.embed(block, draft.config.input_embedding_scale).to(draft.dtype)
            hidden = draft(noise, block_pos, self.dcache.views(rows, kv_len), spec)
            head = self.draft_head if self.draft_head is not None else target.lm_head_weight.to(draft.dtype)
            draft_logits = draft.logits(hidden[:, 1:], head)  # [b, T-1, V or kept tokens]
            drafts = draft_logits.argmax(-1)
            if not greedy:
                q = sampling.probs(draft_logits, s)
                u = self.uniforms[:rows, :size - 1]
                drafts = torch.where(s.greedy[:, None], drafts, sampling.sample(q, u))
            if self.draft_ids is not None:  # kept-list positions -> token ids; q onto the whole vocabulary
                drafts = self.draft_ids[drafts]
                if q is not None:
                    q = q.new_zeros(*q.shape[:-1], target.vocab_size).index_copy_(2, self.draft_ids, q)
            if self.oracle_accept is not None:
                drafts = self._oracle_drafts(anchor_pos, offsets[:size - 1])
            block[:, 1:] = drafts
        self._tick("draft")

        # 3. the target verifies the block in one forward
        layer_ids = draft.target_layer_ids if self.speculative else None
        logits, feats = target.forward(block, block_pos, kv_len=kv_len, layer_ids=layer_ids)
        # 4. accept the longest correct prefix, plus one token of the target's own
        if drafts is None:
            drafts = block[:, :0]
            q = logits.new_zeros(rows, 0, logits.shape[-1])
        accepted, nxt = sampling.accept_greedy(drafts, logits)
        if not greedy:
            p = sampling.probs(logits, s)
            u = self.uniforms[:rows]
            acc_s, nxt_s = sampling.accept_rejection(drafts, p, q, u[:, size - 1:2 * size - 2], u[:, 2 * size - 1])
            accepted = torch.where(s.greedy, accepted, acc_s)
            nxt = torch.where(s.greedy, nxt, nxt_s)
        if self.oracle_force:
            accepted = torch.full_like(accepted, min(self.oracle_accept, size - 1))
            index = (anchor_pos + 1 + accepted).clamp(max=self.capacity - 1)
            nxt = self.oracle_table[:rows].gather(1, index[:, None])[:, 0]
        tokens = torch.cat([drafts, nxt[:, None]], dim=1).scatter(1, accepted[:, None], nxt[:, None])
        self._tick("verify")

        active = self.active[:rows]
        if self.speculative:
            if absorb:  # the buffer starts over at this block's anchor
                base = torch.zeros_like(anchor_pos)
                self.pend_pos[:rows] = torch.where(active, anchor_pos, 0)
            else:  # append after what is pending (the host made sure it fits)
                base = self.pend_len[:rows]
            index = (base[:, None] + torch.arange(size, device=self.device)).clamp(max=chunk - 1)
            self.pend_feats[:rows].scatter_(1, index[:, :, None].expand(-1, -1, feats.shape[-1]), feats)
            self.pend_len[:rows] = torch.where(active, base + accepted + 1, 0)
        self.anchor_pos[:rows] = torch.where(active, anchor_pos + accepted + 1, 0)
        self.anchor_tok[:rows] = nxt
        return accepted, tokens

    def _oracle_drafts(self, anchor_pos: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        rows = anchor_pos.shape[0]
        index = (anchor_pos[:, None] + 1 + offsets).clamp(max=self.capacity - 1)
        ref = self.oracle_table[:rows].gather(1, index)
        wrong = (ref + 1) % self.target.vocab_size
        return torch.where(offsets < self.oracle_accept, ref, wrong)

    # ----------------------------------------------------------------- helpers
    def generate(self, prompts: list[list[int]], params: SamplingParams | list[SamplingParams] | None = None, *,
                 speculative: bool | None = None, progress: bool = False,
                 references: list[list[int]] | None = None,
                 on_update: Callable[[Update], None] | None = None) -> list[GenerationResult]:
        """Generate for many prompts with continuous batching; results in prompt order."""
        if self.has_work():
            raise RuntimeError("generate() needs an idle engine; use add_request/step for concurrent use")
        if not isinstance(params, list):
            params = [params or SamplingParams()] * len(prompts)
        if len(params) != len(prompts):
            raise RequestError(f"{len(prompts)} prompts but {len(params)} sampling settings")
        refs = references or [None] * len(prompts)
        if len(refs) != len(prompts):
            raise RequestError(f"{len(prompts)} prompts but {len(refs)} references")
        previous = self.speculative
        if speculative is not None:
            if speculative and self.draft is None:
                raise RequestError("speculative decoding needs a drafter")
            self.speculative = speculative and self.block_size > 1
        streamed = on_update is not None  # without a callback nobody reads the text deltas
        ids: list[int] = []
        bar = None
        try:
            # everything from the first add_request on is undone on any error: a prompt refused after others
            # were queued, a failed step or a failing on_update left requests behind, and every later
            # generate() refused the engine as busy
            for p, q, r in zip(prompts, params, refs, strict=True):
                ids.append(self.add_request(p, q, r, stream_text=streamed))
            if progress:
                from tqdm.auto import tqdm

                bar = tqdm(total=len(ids), desc="generate", unit="req")
            while self.has_work():
                for update in self.step():
                    if on_update is not None:
                        on_update(update)
                    if update.finished and bar is not None:
                        bar.update(1)
            return [self.pop_result(i) for i in ids]
        except BaseException:
            for seq_id in ids:  # leave the engine idle and usable
                self.abort(seq_id)
                self.sequences.pop(seq_id, None)
            raise
        finally:
            if bar is not None:
                bar.close()
            self.speculative = previous

    def stream(self, prompt_ids: list[int], params: SamplingParams | None = None) -> Iterator[Update]:
        """Yield updates of one request as they are produced (other queued requests advance too).

        The request is forgotten at the end (finished or abandoned): kept, every streamed answer stayed in memory.
        Streams may interleave (`zip(gen.stream(a), gen.stream(b))`, or step() called meanwhile): step() puts each
        stream's updates in its inbox. A stream read only the steps it ran, so it missed the tokens of the others'."""
        seq_id = self.add_request(prompt_ids, params)
        inbox = self._inboxes[seq_id] = deque()
        try:
            while True:
                if not inbox:
                    seq = self.sequences.get(seq_id)
                    if seq is None or seq.finished:  # aborted or popped elsewhere: no update will come
                        return
                    self.step()
                while inbox:
                    update = inbox.popleft()
                    yield update
                    if update.finished:
                        return
        finally:
            del self._inboxes[seq_id]
            self.abort(seq_id)
            self.sequences.pop(seq_id, None)

    def chat_prompt(self, messages: list[dict], **template_kwargs) -> list[int]:
        """Token ids of a chat with the model's own template and the assistant turn opened."""
        return chat_prompt(self.tokenizer, messages, **template_kwargs)


def chat_prompt(tokenizer, messages: list[dict], **template_kwargs) -> list[int]:
    return encode_chat(tokenizer, chat_text(tokenizer, messages, **template_kwargs))


def chat_text(tokenizer, messages: list[dict], **template_kwargs) -> str:
    """The chat as the model reads it, not yet tokenised: the server bounds its length before encoding it."""
    if not messages:
        raise RequestError("messages is empty: give at least one message")
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("content"), str) or m.get("role") not in (
                "system", "user", "assistant", "developer", "tool"):
            raise RequestError(f"bad message {m!r}: need {{'role': system|user|assistant, 'content': str}}")
    if getattr(tokenizer, "chat_template", None):
        from jinja2 import TemplateError

        try:
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                 **template_kwargs)
        except TemplateError as exc:  # e.g. Gemma 2's 'System role not supported': a traceback in generate/bench
            raise RequestError(f"the model's chat template rejected these messages: {exc}") from exc
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages) + "\nassistant:"


def encode_chat(tokenizer, text: str) -> list[int]:
    """A template writes its own special tokens (BOS, ...); the plain fallback lets the tokenizer add them."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.encode(text, add_special_tokens=False)
    return tokenizer.encode(text)
