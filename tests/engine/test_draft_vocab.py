"""A pruned draft vocabulary: drafts come only from the kept tokens, and output stays exactly the target's
(greedy: equal to plain decoding; sampling: the target's distribution)."""

from __future__ import annotations

import pytest
import torch
from test_sampling_distribution import check_samples_match_target, sharp_draft
from tiny_models import build_tiny, random_prompts, reference_greedy

from dflashkit import DFlashDraft, Generator, SamplingParams
from dflashkit.errors import ConfigError
from dflashkit.models.draft_vocab import auto_size, count_tokens, kept_ids
from dflashkit.models.factory import random_draft


def test_sizes_and_kept_ids():
    counts = torch.zeros(5000, dtype=torch.long)
    counts[:1500] = 100  # 1,500 common tokens hold 99.9% of the mass
    counts[1500:] = torch.tensor([1] * 150 + [0] * 3350)
    assert auto_size(counts, coverage=0.999) == 2048  # 1,500 needed, in steps of 1024
    assert auto_size(counts, coverage=1.0) == 2048  # 1,650 needed
    assert auto_size(torch.zeros(10, dtype=torch.long)) == 10  # no counts: every token
    ids = kept_ids(counts, 3, always=[4999, 7, 10 ** 6])
    assert ids.tolist() == [0, 1, 2, 7, 4999]  # ties by id, stop/special ids always, out-of-range ignored
    assert count_tokens([torch.tensor([1, 1, 3, 9]), torch.tensor([3])], 5).tolist() == [0, 2, 0, 2, 0]


def _pruned_pair(vocab: int, keep: int, seed: int = 3):
    target, reference = build_tiny("llama", seed=seed, vocab=vocab)
    draft = random_draft(target, num_layers=1, block_size=4, seed=1)
    draft.token_counts = torch.arange(vocab, 0, -1)  # token 0 most frequent
    return target, reference, draft


def test_greedy_with_a_pruned_draft_vocabulary_equals_plain_decoding():
    target, reference, draft = _pruned_pair(vocab=96, keep=24)
    gen = Generator(target, draft, block_size=4, max_batch=4, max_length=64, draft_vocab=24)
    assert gen.draft_ids.tolist() == list(range(24)) and gen.draft_head.shape == (24, target.hidden_size)
    proposed = []
    original = gen.draft.logits
    gen.draft.logits = lambda h, w: proposed.append(w.shape[0]) or original(h, w)
    prompts = random_prompts(5, seed=4)
    expected = [reference_greedy(reference, p, 16) for p in prompts]
    got = gen.generate(prompts, SamplingParams(max_new_tokens=16))
    assert [r.token_ids for r in got] == expected
    assert proposed and set(proposed) == {24}  # the draft head had 24 rows, not 96
    oracle = Generator(target, draft, block_size=4, max_batch=4, max_length=64, draft_vocab=24)
    oracle.set_oracle(4)
    assert [r.token_ids for r in oracle.generate(prompts, SamplingParams(max_new_tokens=16),
                                                 references=expected)] == expected


@pytest.mark.parametrize("temperature,top_p,top_k", [(1.0, 1.0, 0), (0.8, 0.9, 4)])
def test_sampling_with_a_pruned_draft_vocabulary_keeps_the_target_distribution(temperature, top_p, top_k):
    vocab = 12
    target, reference = build_tiny("qwen3", seed=1, vocab=vocab)
    draft = sharp_draft(target)
    draft.token_counts = torch.tensor([5, 9, 1, 7, 3, 8, 2, 6, 4, 0, 1, 2])
    gen = Generator(target, draft, block_size=4, max_batch=64, max_length=32, draft_vocab=5)
    assert gen.draft_ids.tolist() == [0, 1, 3, 5, 7]  # the 5 most frequent (no special tokens here)
    params = SamplingParams(max_new_tokens=3, temperature=temperature, top_p=top_p, top_k=top_k)
    check_samples_match_target(gen, reference, params, vocab)


def test_counts_travel_with_the_drafter_and_choose_the_size(tmp_path):
    target, _, draft = _pruned_pair(vocab=3000, keep=0)
    counts = torch.zeros(3000, dtype=torch.long)
    counts[:900] = 50
    draft.token_counts = counts
    loaded = DFlashDraft.from_pretrained(draft.save_pretrained(tmp_path / "d"))
    assert torch.equal(loaded.token_counts, counts)
    assert Generator(target, loaded, max_length=64).draft_ids.numel() == 1024  # auto: 900 needed, step 1024
    assert Generator(target, loaded, max_length=64, draft_vocab=0).draft_ids is None
    plain = random_draft(target, num_layers=1, block_size=4)
    assert Generator(target, plain, max_length=64).draft_ids is None  # no counts: the whole vocabulary
    with pytest.raises(ConfigError, match="token_counts"):
        Generator(target, plain, max_length=64, draft_vocab=512)


@pytest.mark.parametrize("text", ['{"counts": [1, 2', '{"what": "no counts"}', '{"counts": [[1], 2]}'])
def test_a_torn_or_foreign_counts_file_is_one_line(tmp_path, text):
    """It raised JSONDecodeError / KeyError from every load of the drafter, whatever --draft-vocab said."""
    target, _, draft = _pruned_pair(vocab=300, keep=0)
    path = draft.save_pretrained(tmp_path / "d")
    (path / "token_counts.json").write_text(text)
    with pytest.raises(ConfigError, match="token_counts.json holds no list of token counts"):
        DFlashDraft.from_pretrained(path)
