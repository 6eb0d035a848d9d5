"""Found by probing with the fields and typos a client of the official openai package sends."""

from __future__ import annotations

import pytest

from dflashkit.serving.errors import APIError
from dflashkit.serving.protocol import chat_request, completion_request

HI = [{"role": "user", "content": "hi"}]


def error_of(parse, body: dict) -> APIError:
    with pytest.raises(APIError) as caught:
        parse(body)
    assert caught.value.status == 400
    return caught.value


@pytest.mark.parametrize("parse,body,param", [
    (chat_request, {"messages": HI, "Temperature": 0.5}, "Temperature"),
    (completion_request, {"prompt": "hi", "MaxTokens": 3}, "MaxTokens"),
    (chat_request, {"messages": HI, "str": 1}, "str"),
    (chat_request, {"messages": [{"role": "user", "content": "hi", "Name": "bob"}]}, "messages.0.Name"),
    (chat_request, {"messages": HI, "stream": True, "stream_options": {"Include_usage": True}},
     "stream_options.Include_usage"),
], ids=["capitalised", "camel-case", "type-name", "in-a-message", "in-stream-options"])
def test_unknown_field_is_named_even_when_it_looks_like_a_type_tag(parse, body, param):
    """A key starting with a capital (or named like a type) was taken for pydantic's union tag and dropped from
    the path: "Unrecognized request argument supplied: None", param null, for a typo such as `Temperature`."""
    error = error_of(parse, body)
    assert error.code == "unrecognized_argument" and error.param == param and param in error.message


def test_union_member_tags_still_stay_out_of_the_path():
    assert error_of(chat_request, {"messages": HI, "stop": ["a", 1]}).param == "stop.1"
    error = error_of(chat_request, {"messages": [{"role": "user", "content": [{"text": "x"}]}]})
    assert error.param == "messages.0.content.0.type" and error.code == "missing_required_parameter"


def test_successors_of_user_are_accepted_like_user():
    """openai's client documents `user` as "being replaced by `safety_identifier` and `prompt_cache_key`": both
    were a 400 unrecognized_argument, while `user` itself was accepted."""
    body = {"messages": HI, "user": "u1", "safety_identifier": "hash-of-u1", "prompt_cache_key": "app-1"}
    assert chat_request(body)[1].messages[-1]["content"] == "hi"
    assert error_of(chat_request, {"messages": HI, "safety_identifier": 5}).param == "safety_identifier"


@pytest.mark.parametrize("parse,body,param", [
    (chat_request, {"messages": HI, "top_logprobs": -1}, "top_logprobs"),
    (chat_request, {"messages": HI, "top_logprobs": 21}, "top_logprobs"),
    (completion_request, {"prompt": "hi", "best_of": 0}, "best_of"),
    # OpenAI's range is -2..2: 2.5 (or NaN) read "not supported ... leave at 0", as if it were a valid penalty
    (chat_request, {"messages": HI, "presence_penalty": 2.5}, "presence_penalty"),
    (completion_request, {"prompt": "hi", "frequency_penalty": -3}, "frequency_penalty"),
    (chat_request, {"messages": HI, "frequency_penalty": float("nan")}, "frequency_penalty"),
])
def test_out_of_range_values_are_invalid_not_unsupported(parse, body, param):
    """`best_of: 0` or `top_logprobs: -1` read "not supported", as if a valid value were merely not implemented."""
    error = error_of(parse, body)
    assert error.param == param and "must be" in error.message and "not supported" not in error.message
