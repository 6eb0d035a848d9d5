"""Corpus answers (datagen --answers corpus) and the target's own labels (train --labels target)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from trainkit import ByteTokenizer, tiny_llama, turn_tokenizer

from dflashkit import Generator, SamplingParams, TargetModel
from dflashkit.engine.generator import chat_prompt
from dflashkit.training.blocks import greedy_labels, make_blocks, sample_anchors
from dflashkit.training.corpus import corpus_rows, run_corpus
from dflashkit.training.datagen import run_datagen
from dflashkit.training.dataset import SequenceData, collate
from dflashkit.training.features import TargetFeatures
from dflashkit.training.prompts import load_conversations, load_dialogues
from dflashkit.training.shards import list_shards, read_shard
from dflashkit.training.train_config import TrainConfig
from dflashkit.training.trainer import train


def test_greedy_labels_follow_their_definition():
    """Offset k learns greedy[a+k-1], in the loss iff tokens a+1..a+k-1 each equal the greedy choice before them."""
    g = torch.Generator().manual_seed(0)
    b, length, t = 3, 40, 5
    tokens = torch.randint(0, 4, (b, length), generator=g)  # 4 ids: the chain holds often enough to test
    greedy = torch.randint(0, 4, (b, length), generator=g)
    loss_mask = torch.zeros(b, length, dtype=torch.bool)
    loss_mask[:, 10:] = True
    lengths = torch.tensor([40, 33, 25])
    anchors, valid = sample_anchors(loss_mask, lengths, 12, g)
    blocks = greedy_labels(make_blocks(tokens, loss_mask, lengths, anchors, valid, t, 99), tokens, greedy)
    labels, mask = blocks.labels.view(b, -1, t), blocks.label_mask.view(b, -1, t)
    seen = 0
    for r in range(b):
        for i in range(anchors.shape[1]):
            a = int(anchors[r, i])
            for k in range(t):
                inside = bool(valid[r, i]) and k >= 1 and a + k < lengths[r] and bool(loss_mask[r, min(a + k, 39)])
                chain = all(int(tokens[r, a + j]) == int(greedy[r, a + j - 1]) for j in range(1, k))
                assert bool(mask[r, i, k]) == (inside and chain), (r, i, k)
                if mask[r, i, k]:
                    assert int(labels[r, i, k]) == int(greedy[r, a + k - 1])
                    seen += k >= 2
    assert seen > 10  # the chain rule was exercised beyond offset 1


@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_greedy_tokens_are_the_argmax_of_the_models_own_logits(family):
    """Caught at the head's input, so a final logit softcap (gemma2) cannot change them; features unchanged."""
    from tiny_models import tiny_hf

    model = tiny_hf(family, dtype=torch.float32).eval()
    tokens = torch.randint(0, model.config.vocab_size, (2, 23), generator=torch.Generator().manual_seed(1))
    feats = TargetFeatures(model, [0, 2])
    got_feats, greedy = feats.with_greedy(tokens)
    with torch.no_grad():
        want = model(input_ids=tokens).logits.argmax(-1)
    assert torch.equal(greedy, want)
    assert torch.equal(got_feats, feats(tokens))
    assert type(model.get_output_embeddings()).__name__ == "Linear"  # the head is back


def test_on_the_targets_own_answers_its_labels_are_the_data(tmp_path):
    """Greedy datagen rows: every next token is the target's greedy choice, so labels 'target' change nothing."""
    model, tok = tiny_llama(seed=2), ByteTokenizer()
    gen = Generator(TargetModel(copy.deepcopy(model), tok), None, tok, max_batch=8, max_length=128)
    convs = [[f"question {i}: how about {i * 5 % 11}?"] for i in range(8)]
    run_datagen(gen, convs, tmp_path, lambda m: chat_prompt(tok, m), SamplingParams(max_new_tokens=30),
                shard_size=8, progress=False)
    data = SequenceData([tmp_path])
    tokens, _, blocks = collate(data, list(range(len(data))), 16, 6, 63, seed=3)
    _, greedy = TargetFeatures(model, [0, 1]).with_greedy(tokens)
    relabelled = greedy_labels(blocks, tokens, greedy)
    assert blocks.label_mask.sum() > 100
    assert torch.equal(relabelled.label_mask, blocks.label_mask)
    assert torch.equal(relabelled.labels, blocks.labels)


SHAREGPT = [
    {"id": "a", "conversations": [{"from": "system", "value": "be brief"},
                                  {"from": "human", "value": "What is a cat, really?"},
                                  {"from": "gpt", "value": "A small animal."},
                                  {"from": "human", "value": "And a dog then?"},
                                  {"from": "gpt", "value": "A larger one."}]},
    {"id": "b", "conversations": [{"from": "human", "value": "first question here"},
                                  {"from": "human", "value": "second one, unanswered before"},
                                  {"from": "gpt", "value": "answer to the second"}]},
    {"id": "c", "messages": [{"role": "user", "content": "Tell me about the sea."},
                             {"role": "assistant", "content": "It is wide and salty."}]},
    {"id": "d", "conversations": [{"from": "human", "value": "no answer came for this"}]},
]


def test_dialogues_pair_each_user_turn_with_the_answer_after_it(tmp_path):
    path = tmp_path / "sg.json"
    path.write_text(json.dumps(SHAREGPT))
    dialogues = {d[0][0]: d for d in load_dialogues(str(path), max_turns=4, seed=None)}
    assert dialogues["What is a cat, really?"] == [("What is a cat, really?", "A small animal."),
                                                  ("And a dog then?", "A larger one.")]
    assert dialogues["first question here"] == [("first question here", None),
                                                ("second one, unanswered before", "answer to the second")]
    assert dialogues["Tell me about the sea."] == [("Tell me about the sea.", "It is wide and salty.")]
    assert dialogues["no answer came for this"] == [("no answer came for this", None)]
    for turns in (1, 4):  # same conversations, same order: the same --seed holds out the same ones
        assert load_conversations(str(path), max_turns=turns, seed=5) == [
            [q for q, _ in d] for d in load_dialogues(str(path), max_turns=turns, seed=5)]


def test_corpus_rows_are_the_prompt_then_the_answer_to_its_end_of_turn():
    tok = turn_tokenizer()
    stats = {k: 0 for k in ("rows", "response_tokens", "skipped_long", "no_answer", "template_mismatch")}
    encode = lambda m: chat_prompt(tok, m)  # noqa: E731
    dialogue = [("What is a cat?", "A small animal."), ("And a dog?", "A larger one."), ("Why?", None)]
    rows = corpus_rows(dialogue, tok, [tok.eos_token_id], 200, 50, stats)
    end = tok.convert_tokens_to_ids("<end_of_turn>")
    first = encode([{"role": "user", "content": "What is a cat?"}])
    assert rows[0].tokens == first + tok.encode("A small animal.", add_special_tokens=False) + [end]
    assert rows[0].response_start == len(first)  # the newline the template writes after the turn is not learned
    second = encode([{"role": "user", "content": "What is a cat?"}, {"role": "assistant", "content": "A small animal."},
                     {"role": "user", "content": "And a dog?"}])
    assert rows[1].tokens == second + tok.encode("A larger one.", add_special_tokens=False) + [end]
    assert len(rows) == 2 and stats["no_answer"] == 1 and stats["rows"] == 2
    cut = corpus_rows(dialogue, tok, [end], 200, 4, dict.fromkeys(stats, 0))
    assert [len(r.tokens) - r.response_start for r in cut] == [4, 4]
    assert corpus_rows(dialogue, tok, [end], 20, 50, stats) == [] and stats["skipped_long"] == 1


@pytest.fixture(scope="module")
def corpus_setup(tmp_path_factory):
    """A tiny target (vocab 128) answering 16 prompts greedily, and a corpus of 24 other conversations."""
    root = tmp_path_factory.mktemp("corpus")
    tok = turn_tokenizer()
    model = tiny_llama(seed=4, vocab=128)
    model.lm_head.weight.data.mul_(8)  # a decisive target: its greedy chain is not a coin toss
    dialogues = [[(f"Question number {i} about {w}?", f"My answer is that {w} comes {i % 4 + 1} times.")]
                 for i, w in enumerate(["cats", "dogs", "seas", "hills", "rain", "snow"] * 4)]
    corpus = root / "corpus"
    encode = lambda m: chat_prompt(tok, m)  # noqa: E731
    run_corpus(dialogues, corpus, tok, [tok.eos_token_id], 200, 64, shard_size=8, progress=False)
    (corpus / "datagen.json").write_text(json.dumps({"answers": "corpus"}))
    own = root / "own"
    own.mkdir()
    gen = Generator(TargetModel(copy.deepcopy(model), tok), None, tok, max_batch=8, max_length=160)
    run_datagen(gen, [[f"Tell me {i}"] for i in range(16)], own, encode, SamplingParams(max_new_tokens=40),
                shard_size=8, progress=False)
    return root, model, tok


def _config(data, out, **kw) -> TrainConfig:
    base = dict(data=[str(d) for d in data], out=str(out), num_layers=1, block_size=6, anchors=12, batch_size=4,
                lr=3e-3, warmup_steps=2, max_steps=16, log_every=4, save_every=100, tensorboard=False, seed=0,
                eval_num=0)
    return TrainConfig(**{**base, **kw})


def test_training_on_corpus_answers_learns_the_targets_labels(corpus_setup, tmp_path):
    root, model, tok = corpus_setup
    train(_config([root / "corpus"], tmp_path), target=(model, tok))
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["labels"] for r in rows if r.get("event") == "start"] == ["target"]  # auto: corpus data
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses[-1] < losses[0] - 0.2, losses


def test_mixed_data_counts_draft_tokens_in_the_targets_own_answers_only(corpus_setup, tmp_path):
    root, model, tok = corpus_setup
    summary = train(_config([root / "own", root / "corpus"], tmp_path, max_steps=2), target=(model, tok))
    from dflashkit import DFlashDraft

    counts = DFlashDraft.from_pretrained(summary["draft"]).token_counts
    own = torch.zeros_like(counts)
    for path in list_shards(root / "own"):
        for tokens, mask in read_shard(path):
            own += torch.bincount(tokens[mask], minlength=counts.numel())
    assert torch.equal(counts, own)


def test_labels_data_and_distill_are_kept_apart(corpus_setup, tmp_path):
    from dflashkit.errors import ConfigError

    root, model, tok = corpus_setup
    with pytest.raises(ConfigError, match="labels 'target'"):
        _config([root / "own"], tmp_path, labels="target", distill=0.5).validate()
    with pytest.raises(ConfigError, match="not the target's greedy text"):
        train(_config([root / "corpus"], tmp_path, distill=0.5), target=(model, tok))
    with pytest.raises(ConfigError, match="labels must be"):
        _config([root / "own"], tmp_path, labels="teacher").validate()
    train(_config([root / "own"], tmp_path / "d", max_steps=2), target=(model, tok))
    start = json.loads((tmp_path / "d" / "log.jsonl").read_text().splitlines()[0])
    assert start["labels"] == "data"  # auto: the target's own greedy answers


def test_sampled_answers_learn_the_targets_greedy_labels(corpus_setup, tmp_path):
    """A sampled token is not what greedy verification accepts: auto takes the target's labels for such data."""
    import shutil

    from dflashkit.training.dataset import answers_of

    root, model, tok = corpus_setup
    sampled = tmp_path / "sampled"
    shutil.copytree(root / "own", sampled)
    for settings, source in (({"temperature": 0.0}, "greedy"), ({"temperature": 0.7}, "sampled"),
                             ({"answers": "corpus"}, "corpus"), ([], "greedy")):
        (sampled / "datagen.json").write_text(json.dumps(settings))
        assert answers_of(sampled) == source
    (sampled / "datagen.json").write_text(json.dumps({"temperature": 0.7}))
    train(_config([root / "own", sampled], tmp_path / "run", max_steps=2), target=(model, tok))
    start = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[0])
    assert start["labels"] == "target"


def _cli(*argv: str) -> int:
    from dflashkit.cli.main import main

    try:
        return main(list(argv))
    except SystemExit as exc:
        return exc.code


def test_datagen_answers_corpus_writes_resumable_shards_without_running_the_model(tmp_path, capsys):
    model_dir, prompts, out = tmp_path / "m", tmp_path / "sg.json", tmp_path / "out"
    tiny_llama(vocab=128).save_pretrained(model_dir)
    tok = turn_tokenizer()
    tok.save_pretrained(model_dir)
    prompts.write_text(json.dumps(SHAREGPT))
    flags = ("datagen", "--model", str(model_dir), "--prompts", str(prompts), "--out", str(out), "--heldout", "1",
             "--turns", "4", "--keep-benchmarks", "--no-progress", "--shard-size", "2")
    assert _cli(*flags, "--answers", "corpus") == 0
    assert json.loads((out / "datagen.json").read_text())["answers"] == "corpus"
    held = json.loads((out / "heldout.jsonl").read_text())["turns"]
    dialogues = {d[0][0]: d for d in load_dialogues(str(prompts), max_turns=4, seed=None)}
    want = sorted(a + "<end_of_turn>" for first, d in dialogues.items() if first not in (held[0], "first question here")
                  for _, a in d if a)  # conversation 'b' ends at its unanswered first turn: none of its answers
    rows = [r for p in list_shards(out) for r in read_shard(p)]
    got = sorted(tok.decode(t[m]) for t, m in rows)
    assert got == want and got
    before = [p.stat().st_mtime_ns for p in list_shards(out)]
    assert _cli(*flags, "--answers", "corpus") == 0  # resume: complete shards are kept
    assert [p.stat().st_mtime_ns for p in list_shards(out)] == before
    assert _cli(*flags) == 2 and "holds answers by the corpus" in capsys.readouterr().err
    assert _cli(*flags[:-1], "3", "--answers", "corpus", "--temperature", "0.7") == 2
    assert "generates nothing" in capsys.readouterr().err
