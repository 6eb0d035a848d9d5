"""Stop strings, streaming deltas and limits on the host-side sequence state."""

from __future__ import annotations

from dflashkit import SamplingParams
from dflashkit.engine.sequence import Sequence


class Chars:
    """Token i is the letter chr(97 + i); 26 is a multi-byte char split over two tokens (27 completes it)."""

    def decode(self, ids, skip_special_tokens=True):
        out, pending = [], False
        for i in ids:
            if i == 26:
                pending = True
            elif i == 27 and pending:
                out.append("é")
                pending = False
            else:
                out.append(chr(97 + i))
        return "".join(out) + ("\ufffd" if pending else "")


def make(stop=None, limit=50, stop_ids=()):
    return Sequence(id=0, prompt_ids=[0], params=SamplingParams(stop=stop, max_new_tokens=limit),
                    stop_ids=frozenset(stop_ids), limit=limit, tokenizer=Chars())


def ids(text):
    return [ord(c) - 97 for c in text]


def test_stop_string_across_tokens_truncates_text_and_tokens():
    seq = make(stop=["cde"])
    kept = seq.extend(ids("abcdefgh"), speculative_step=True)
    assert kept == ids("abcde")  # nothing after the token that completed the stop string
    assert seq.finish_reason == "stop" and seq.final_text() == "ab"
    assert seq.acceptance_lengths == [5]


def test_a_stop_string_longer_than_the_usual_tail_is_found():
    stop = "bc" * 40  # 80 tokens (one letter each), more than the 48-token tail re-decoded for short stops
    seq = make(stop=[stop], limit=200)
    assert seq.extend(ids("a" + stop[:-1]), speculative_step=True) == ids("a" + stop[:-1]) and not seq.finished
    assert seq.extend(ids(stop[-1] + "xyz"), speculative_step=True) == ids(stop[-1])
    assert seq.finish_reason == "stop" and seq.final_text() == "a"


def test_streaming_holds_back_possible_stop_prefix():
    seq = make(stop=["xyz"])
    seq.extend(ids("abx"), speculative_step=True)
    assert seq.text_delta() == "ab"  # "x" may start the stop string
    seq.extend(ids("y"), speculative_step=True)
    assert seq.text_delta() == ""
    seq.extend(ids("q"), speculative_step=True)  # "xyq": not a stop after all
    assert seq.text_delta() == "xyq"
    seq.extend(ids("xyz"), speculative_step=True)
    assert seq.finished and seq.text_delta() == "" and seq.final_text() == "abxyq"


def test_incomplete_utf8_is_held_back():
    seq = make()
    seq.extend([0, 26], speculative_step=False)
    assert seq.text_delta() == "a"
    seq.extend([27], speculative_step=False)
    assert seq.text_delta() == "é"


def test_stop_token_and_limit():
    seq = make(stop_ids={3})
    assert seq.extend([1, 2, 3, 4], speculative_step=True) == [1, 2, 3] and seq.finish_reason == "stop"
    seq = make(limit=2)
    assert seq.extend([1, 2, 3], speculative_step=True) == [1, 2] and seq.finish_reason == "length"


def test_incremental_stream_equals_the_whole_decode_on_a_split_character():
    seq = make()
    pieces = []
    for chunk in ([0, 26], [27, 1], [26], [27], [2, 26, 27, 3]):
        seq.extend(chunk, speculative_step=True)
        pieces.append(seq.text_delta())
    assert pieces == ["a", "éb", "", "é", "céd"]
    assert "".join(pieces) == seq.final_text()


def test_incremental_stream_on_the_real_tokenizer_equals_the_whole_decode():
    """SmolLM2's byte-level BPE: accents, CJK and emoji split over tokens, fed in uneven chunks."""
    import pytest

    try:
        from transformers import AutoTokenizer

        from dflashkit.models.loading import convert_gguf, embedded_gguf

        tokenizer = AutoTokenizer.from_pretrained(str(convert_gguf(embedded_gguf())))
    except Exception as exc:  # the data package is part of the test set-up; say so if it is missing
        pytest.skip(f"SmolLM2 tokenizer unavailable: {exc}")
    text = "Café crème, naïve — 東京タワー 🚀🎉 done.\n  def f(x):\treturn x ** 2  # ok ✓"
    tokens = tokenizer.encode(text, add_special_tokens=False)
    for sizes in ([1], [2, 3], [5, 1, 4], [16]):
        seq = Sequence(id=0, prompt_ids=[0], params=SamplingParams(max_new_tokens=500), stop_ids=frozenset(),
                       limit=500, tokenizer=tokenizer)
        streamed, i, k = [], 0, 0
        while i < len(tokens):
            step = sizes[k % len(sizes)]
            seq.extend(tokens[i:i + step], speculative_step=True)
            streamed.append(seq.text_delta())
            i, k = i + step, k + 1
        assert all("\ufffd" not in piece for piece in streamed)
        assert "".join(streamed) == tokenizer.decode(tokens, skip_special_tokens=True) == seq.final_text()


def test_incremental_stream_keeps_sentencepiece_spaces():
    """A Metaspace decoder drops the leading space of the first token it decodes: deltas must not."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "\u2581Hello": 1, "\u2581world": 2, "!": 3, "\u2581how": 4, "\u2581are": 5, "\u2581you": 6}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>")
    tokens = [1, 2, 3, 4, 5, 6]
    assert tokenizer.decode(tokens) == "Hello world! how are you" and tokenizer.decode([2]) == "world"
    seq = Sequence(id=0, prompt_ids=[0], params=SamplingParams(max_new_tokens=50), stop_ids=frozenset(),
                   limit=50, tokenizer=tokenizer)
    streamed = []
    for t in tokens:
        seq.extend([t], speculative_step=True)
        streamed.append(seq.text_delta())
    assert streamed == ["Hello", " world", "!", " how", " are", " you"]
    assert "".join(streamed) == seq.final_text()


def test_streamed_pieces_always_add_up_to_the_final_text():
    """Random answers over a tiny alphabet (with split characters), random chunks, overlapping stop strings."""
    import random

    rng = random.Random(0)
    for trial in range(300):
        stop = [rng.choice(["ab", "bcb", "cc", "éa", "abcab"]) for _ in range(rng.randint(0, 2))] or None
        seq = make(stop=stop, limit=rng.randint(3, 40))
        streamed = []
        while not seq.finished:
            chunk = [rng.choice([0, 1, 2, 26, 27]) for _ in range(rng.randint(1, 5))]
            seq.extend(chunk, speculative_step=True)
            streamed.append(seq.text_delta())
        text = "".join(streamed)
        assert text == seq.final_text(), (trial, stop, streamed)
        assert not any(s in text for s in stop or ()), (trial, stop, text)


def test_cut_at_once_commits_what_token_by_token_commits():
    """Without stop strings `extend` cuts each chunk at once: same tokens, reason and acceptance lengths as
    committing one token at a time (a stop token on the last allowed token is a stop, not the length)."""
    import random

    rng = random.Random(1)
    for trial in range(500):
        limit, stop_ids = rng.randint(1, 12), set(rng.sample(range(6), rng.randint(0, 2)))
        seq = make(limit=limit, stop_ids=stop_ids)
        generated, reason = [], None
        while reason is None:
            chunk = [rng.randrange(6) for _ in range(rng.randint(1, 5))]
            want = []
            for token in chunk:  # the rule, one token at a time
                if reason is not None:
                    break
                generated.append(token)
                want.append(token)
                reason = "stop" if token in stop_ids else "length" if len(generated) >= limit else None
            assert seq.extend(chunk, speculative_step=True) == want, trial
            assert seq.finish_reason == reason and seq.generated == generated, trial
        assert seq.acceptance_lengths[-1] >= 1 and sum(seq.acceptance_lengths) == len(generated)
        assert seq.t_end is not None and seq.t_first is not None
        assert seq.extend([0], speculative_step=True) == [] and seq.generated == generated  # finished: no-op


def test_a_character_still_arriving_does_not_match_a_replacement_character_stop():
    """The decoder shows a split character's first bytes as U+FFFD; that is not text yet, so a stop string
    holding U+FFFD must not match it (the answer was cut before the character completed)."""
    seq = make(stop=["b\ufffd"])
    assert seq.extend([1, 26], speculative_step=True) == [1, 26] and not seq.finished  # "b" + half of "é"
    seq.extend([27, 2], speculative_step=True)
    assert not seq.finished and seq.final_text() == "béc"
