"""Local JSONL prompt files: prompt / turns / messages rows, and clear errors for bad files."""

from __future__ import annotations

import json

import pytest

from dflashkit.bench.datasets import load_samples
from dflashkit.bench.errors import BenchError
from dflashkit.bench.samples import Sample


def write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def test_prompt_turns_and_messages_rows(tmp_path):
    path = write(tmp_path / "mine.jsonl", [
        {"prompt": "hello"},
        "",
        {"id": "two", "turns": ["a", "b"]},
        {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "q1"},
                      {"role": "assistant", "content": "old answer"}, {"role": "user", "content": "q2"}]},
    ])
    samples, source = load_samples(path)
    assert source.endswith("mine.jsonl")
    assert [s.turns for s in samples] == [["hello"], ["a", "b"], ["q1", "q2"]]
    assert samples[0].id == "mine-1" and samples[1].id == "two"
    assert samples[2].system == "be brief"


def test_second_turn_sees_the_models_own_first_answer():
    sample = Sample("x", ["q1", "q2"], system="sys")
    assert sample.messages([]) == [{"role": "system", "content": "sys"}, {"role": "user", "content": "q1"}]
    assert sample.messages(["a1"])[1:] == [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
                                           {"role": "user", "content": "q2"}]


@pytest.mark.parametrize("rows, message", [
    (["{not json"], "mine.jsonl:1: not valid JSON"),
    ([{"text": "hi"}], "no prompt field"),
    ([{"prompt": ""}], "non-empty strings"),
    ([{"turns": "not a list"}], "non-empty strings"),
    ([[1, 2]], "expected a JSON object"),
    ([""], "holds no prompts"),
])
def test_bad_files_get_clear_errors(tmp_path, rows, message):
    path = write(tmp_path / "mine.jsonl", rows)
    with pytest.raises(BenchError, match=message):
        load_samples(path)


def test_missing_file(tmp_path):
    with pytest.raises(BenchError, match="prompt file not found"):
        load_samples(str(tmp_path / "absent.jsonl"))


def test_byte_order_marks_and_other_encodings(tmp_path):
    """A UTF-8 file with a byte-order mark (Notepad) failed as 'not valid JSON'; a UTF-16 one (PowerShell's `>`)
    ended in a UnicodeDecodeError traceback."""
    line = json.dumps({"prompt": "hi"}) + "\n"
    (tmp_path / "bom.jsonl").write_bytes(line.encode("utf-8-sig"))
    assert [s.turns for s in load_samples(str(tmp_path / "bom.jsonl"))[0]] == [["hi"]]
    (tmp_path / "wide.jsonl").write_bytes(line.encode("utf-16"))
    with pytest.raises(BenchError, match="wide.jsonl is not UTF-8 text .*save it as UTF-8"):
        load_samples(str(tmp_path / "wide.jsonl"))


def test_a_repeated_id_is_refused(tmp_path):
    """AR and DFlash answers are paired by id: two prompts under one id compared AR's answer to one with DFlash's
    answer to the other: identical runs read 'identical to AR on 0%' of 1 request."""
    path = write(tmp_path / "mine.jsonl", [{"id": "a", "prompt": "x"}, {"prompt": "y"}, {"id": "a", "prompt": "z"}])
    with pytest.raises(BenchError, match="mine.jsonl:3: id 'a' is already used on line 1"):
        load_samples(path)
    assert [s.id for s in load_samples(write(tmp_path / "ok.jsonl", [{"prompt": "x"}, {"prompt": "x"}]))[0]] == [
        "ok-1", "ok-2"]
