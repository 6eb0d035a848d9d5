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
