"""Training inputs that are not what they claim: files that are not shards, prompt files that are not JSON."""

from __future__ import annotations

import pytest

from dflashkit.errors import ConfigError
from dflashkit.training.datagen import _throughput
from dflashkit.training.dataset import SequenceData
from dflashkit.training.prompts import load_conversations


def test_file_that_is_not_a_shard(tmp_path):
    fake = tmp_path / "shard-00000.safetensors"
    fake.write_bytes(b"not safetensors")
    with pytest.raises(ConfigError, match="not a readable `dflashkit datagen` shard"):
        SequenceData([tmp_path])


@pytest.mark.parametrize("name, text, match", [
    ("p.jsonl", '{"prompt": "first prompt"}\n\n{"prompt": "sec', "p.jsonl:3: not valid JSON"),
    ("p.jsonl", '["a list, not an object"]\n', "p.jsonl:1: expected a JSON object"),
    ("p.json", "plain text, one prompt a line\n", "expected a JSON array"),
])
def test_prompt_files_that_do_not_parse(tmp_path, name, text, match):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_conversations(str(path))


def test_throughput_of_a_run_shorter_than_the_rounding():
    """elapsed_s is rounded to 0.1 s for the summary; the rate must use the real time (was 4e9 tok/s)."""
    timing = {"admit_s": 0.01, "decode_s": 0.02, "steps": 3, "rows": 3}
    zero = dict.fromkeys(timing, 0)
    stats = {"response_tokens": 4, "elapsed_s": 0.0}
    assert _throughput(timing, zero, stats, elapsed=0.04)["answer_tok_per_s"] == 100


class _VocabTokenizer:
    def __init__(self, vocab: dict[str, int]):
        self.vocab = vocab

    def get_vocab(self) -> dict[str, int]:
        return self.vocab


def test_shards_of_another_tokenizer_are_refused(tmp_path):
    """Shards from another model's tokenizer trained a drafter on ids that mean other words: silent garbage."""
    import json
    from types import SimpleNamespace

    from dflashkit.training.dataset import check_same_tokenizer
    from dflashkit.training.shards import tokenizer_fingerprint

    theirs, mine = _VocabTokenizer({"a": 0, "b": 1}), _VocabTokenizer({"a": 0, "c": 1})
    (tmp_path / "datagen.json").write_text(json.dumps({"model": "other", "tokenizer": tokenizer_fingerprint(theirs)}))
    data = SimpleNamespace(max_token=1)
    check_same_tokenizer([tmp_path], data, theirs, vocab_size=2)
    check_same_tokenizer([tmp_path / "shard-00000.safetensors"], data, theirs, vocab_size=2)
    with pytest.raises(ConfigError, match="datagen --model other whose tokenizer differs"):
        check_same_tokenizer([tmp_path], data, mine, vocab_size=2)
    with pytest.raises(ConfigError, match="token id 5, beyond the target's vocabulary of 2"):
        check_same_tokenizer([tmp_path], SimpleNamespace(max_token=5), theirs, vocab_size=2)


def test_init_draft_of_another_shape_is_one_line(tmp_path):
    """A drafter of other layers was a page of load_state_dict size mismatches (RuntimeError, exit 1)."""
    import copy

    from trainkit import ByteTokenizer, tiny_llama

    from dflashkit import Generator, SamplingParams, TargetModel
    from dflashkit.engine.generator import chat_prompt
    from dflashkit.training.datagen import run_datagen
    from dflashkit.training.train_config import TrainConfig
    from dflashkit.training.trainer import train

    model, tok = tiny_llama(), ByteTokenizer()
    gen = Generator(TargetModel(copy.deepcopy(model), tok), None, tok, max_batch=4, max_length=64)
    (tmp_path / "data").mkdir()
    run_datagen(gen, [[f"question {i}?"] for i in range(4)], tmp_path / "data", lambda m: chat_prompt(tok, m),
                SamplingParams(max_new_tokens=8), shard_size=4, progress=False)
    base = dict(data=[str(tmp_path / "data")], block_size=4, anchors=4, batch_size=2, max_steps=1, warmup_steps=0,
                tensorboard=False, eval_num=0)
    train(TrainConfig(out=str(tmp_path / "a"), num_layers=1, **base), target=(model, tok))
    with pytest.raises(ConfigError, match="--init-draft .* has another shape"):
        train(TrainConfig(out=str(tmp_path / "b"), num_layers=2, init_draft=str(tmp_path / "a" / "draft"), **base),
              target=(model, tok))


def test_max_len_that_cuts_every_response_says_so(tmp_path):
    """Prompts longer than --max-len lose their whole answer: 'the shards hold no sequence with a response' sent
    the user to check datagen, not the flag."""
    from dflashkit.training.shards import Row, shard_path, write_shard

    write_shard(shard_path(tmp_path, 0), [Row(list(range(1, 31)), 20)] * 2, complete=True)
    assert len(SequenceData([tmp_path], max_len=30)) == 2
    with pytest.raises(ConfigError, match="--max-len 10 cuts every response"):
        SequenceData([tmp_path], max_len=10)


def test_hub_dataset_that_does_not_load_is_one_line(monkeypatch):
    """Offline (or a mistyped id), `datasets` raised a page of traceback from deep inside its hub client."""
    import sys
    from types import SimpleNamespace

    def load_dataset(source, split):
        raise ConnectionError(f"Couldn't reach '{source}' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setitem(sys.modules, "datasets", SimpleNamespace(load_dataset=load_dataset))
    with pytest.raises(ConfigError, match="'someorg/chats' is not a file, nor a `datasets` hub dataset that "
                                          r"loads \(ConnectionError: Couldn't reach"):
        load_conversations("someorg/chats")
