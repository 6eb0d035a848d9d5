"""Datagen: shards of target answers, resumable, time-boxed, multi-turn; prompt sources and decontamination."""

from __future__ import annotations

import copy
import json

import pytest
from trainkit import ByteTokenizer, tiny_llama

from dflashkit import Generator, SamplingParams, TargetModel
from dflashkit.engine.generator import chat_prompt
from dflashkit.training.datagen import run_datagen
from dflashkit.training.prompts import iter_json_array, load_conversations
from dflashkit.training.shards import Row, list_shards, read_shard, shard_is_complete, shard_path, write_shard


@pytest.fixture(scope="module")
def engine():
    model, tok = tiny_llama(seed=1, layers=2), ByteTokenizer()
    return Generator(TargetModel(copy.deepcopy(model), tok), None, tok, max_batch=8, max_length=96), tok


def encoder(tok, calls=None):
    def encode(messages):
        if calls is not None:
            calls.append(messages[-1]["content"])
        return chat_prompt(tok, messages)
    return encode


def test_rows_hold_prompt_then_the_targets_greedy_answer(engine, tmp_path):
    gen, tok = engine
    convs = [["alpha prompt"], ["beta prompt two"], ["gamma"]]
    run_datagen(gen, convs, tmp_path, encoder(tok), SamplingParams(max_new_tokens=10), shard_size=2, progress=False)
    assert [p.name for p in list_shards(tmp_path)] == ["shard-00000.safetensors", "shard-00001.safetensors"]
    rows = read_shard(shard_path(tmp_path, 0)) + read_shard(shard_path(tmp_path, 1))
    for (tokens, mask), conv in zip(rows, convs, strict=True):
        prompt = chat_prompt(tok, [{"role": "user", "content": conv[0]}])
        assert tokens[:len(prompt)].tolist() == prompt and not mask[:len(prompt)].any() and mask[len(prompt):].all()
        answer = gen.generate([prompt], SamplingParams(max_new_tokens=10))[0].token_ids
        assert tokens[len(prompt):].tolist() == answer


def test_resume_skips_completed_shards(engine, tmp_path):
    gen, tok = engine
    convs = [[f"prompt {i}"] for i in range(6)]
    run_datagen(gen, convs, tmp_path, encoder(tok), SamplingParams(max_new_tokens=6), shard_size=2, progress=False)
    shard_path(tmp_path, 1).unlink()  # as if killed before shard 1 was written
    before = {p.name: p.stat().st_mtime_ns for p in list_shards(tmp_path)}
    calls: list[str] = []
    stats = run_datagen(gen, convs, tmp_path, encoder(tok, calls), SamplingParams(max_new_tokens=6), shard_size=2,
                        progress=False)
    assert calls == ["prompt 2", "prompt 3"] and stats["written"] == 1
    assert stats["decode_steps"] > 0 and 1 <= stats["mean_rows"] <= gen.max_batch  # this run's steps only
    assert all(list(tmp_path.glob(name))[0].stat().st_mtime_ns == t for name, t in before.items())
    assert shard_is_complete(shard_path(tmp_path, 1))


def test_out_of_time_writes_incomplete_shards_that_resume_redoes(engine, tmp_path):
    gen, tok = engine
    convs = [[f"prompt {i}"] for i in range(4)]
    stats = run_datagen(gen, convs, tmp_path, encoder(tok), SamplingParams(max_new_tokens=6), shard_size=4,
                        time_budget_s=0.0, progress=False)
    assert stats["timed_out"] and not gen.has_work()
    assert not shard_is_complete(shard_path(tmp_path, 0))
    run_datagen(gen, convs, tmp_path, encoder(tok), SamplingParams(max_new_tokens=6), shard_size=4, progress=False)
    assert shard_is_complete(shard_path(tmp_path, 0)) and len(read_shard(shard_path(tmp_path, 0))) == 4


def test_multi_turn_asks_each_turn_after_the_targets_own_answers(engine, tmp_path):
    gen, tok = engine
    calls: list[str] = []
    run_datagen(gen, [["first question", "second question"]], tmp_path, encoder(tok, calls),
                SamplingParams(max_new_tokens=5), progress=False)
    rows = read_shard(shard_path(tmp_path, 0))
    assert calls == ["first question", "second question"] and len(rows) == 2
    first_answer = tok.decode(rows[0][0][rows[0][1]].tolist())
    expect = chat_prompt(tok, [{"role": "user", "content": "first question"},
                               {"role": "assistant", "content": first_answer},
                               {"role": "user", "content": "second question"}])
    tokens, mask = rows[1]
    assert tokens[:len(expect)].tolist() == expect and not mask[:len(expect)].any()


def test_shard_round_trip(tmp_path):
    write_shard(tmp_path / "s.safetensors", [Row([1, 2, 3, 4], 2), Row([5, 6], 1)], complete=True)
    (t0, m0), (t1, m1) = read_shard(tmp_path / "s.safetensors")
    assert t0.tolist() == [1, 2, 3, 4] and m0.tolist() == [False, False, True, True]
    assert t1.tolist() == [5, 6] and m1.tolist() == [False, True]


def test_truncated_sharegpt_json_and_record_shapes(tmp_path):
    records = [{"conversations": [{"from": "human", "value": "hello there"}, {"from": "gpt", "value": "hi"},
                                  {"from": "human", "value": "second turn"}]},
               {"messages": [{"role": "user", "content": "a messages prompt"}]},
               {"conversations": [{"from": "human", "value": "cut off mid rec"}]}]
    text = json.dumps(records)
    cut = text[: text.rindex("cut off") + 4]  # the PyPI copy ends mid-record
    assert len(list(iter_json_array(cut))) == 2
    path = tmp_path / "sg.json"
    path.write_text(cut)
    convs = load_conversations(str(path), max_turns=2, seed=0)
    assert sorted(convs) == [["a messages prompt"], ["hello there", "second turn"]]
    jsonl = tmp_path / "p.jsonl"
    rows = [{"prompt": "plain prompt here"}, {"turns": ["turn number one", "turn two"]}]
    jsonl.write_text("\n".join(json.dumps(r) for r in rows))
    assert sorted(load_conversations(str(jsonl), max_turns=1)) == [["plain prompt here"], ["turn number one"]]


def test_benchmark_prompts_are_excluded(tmp_path):
    path = tmp_path / "p.jsonl"
    bench = "def has_close_elements(numbers, threshold): check if any two numbers are closer than threshold"
    rows = [{"prompt": "Please solve:  " + bench.upper() + " thanks"}, {"prompt": "an unrelated question"}]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    assert load_conversations(str(path), exclude=[bench]) == [["an unrelated question"]]


def test_held_out_split_does_not_depend_on_turns(tmp_path):
    """A later turn too short (or long) to use ends the conversation there; it does not drop the conversation,
    so `--turns 1` and `--turns 4` runs shuffle the same list and hold out the same prompts."""
    path = tmp_path / "p.jsonl"
    rows = [{"turns": [f"question number {i}", "ok" if i % 3 == 0 else f"follow-up {i}", f"third one {i}"]}
            for i in range(40)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    one, four = load_conversations(str(path), max_turns=1, seed=3), load_conversations(str(path), max_turns=4, seed=3)
    assert [c[0] for c in one] == [c[0] for c in four] and len(four) == 40
    assert all(len(c) == (1 if int(c[0].split()[-1]) % 3 == 0 else 3) for c in four)
