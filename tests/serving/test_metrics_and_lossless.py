"""/metrics is valid Prometheus text that tracks the traffic; served greedy answers equal plain decoding."""

from __future__ import annotations

import re

import httpx
from tiny_models import reference_greedy
from serving_harness import MODEL, server  # noqa: F401  (fixture)

NAME, LABEL = r"[a-zA-Z_:][a-zA-Z0-9_:]*", r'[a-zA-Z_]\w*="(?:[^"\\]|\\.)*"'
SAMPLE = re.compile(rf"^({NAME})(\{{{LABEL}(?:,{LABEL})*\}})? (-?[0-9.]+(?:e[+-]?\d+)?|\+Inf|NaN)$")


def scrape(url: str) -> dict[str, list[tuple[str, float]]]:
    r = httpx.get(url + "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples: dict[str, list[tuple[str, float]]] = {}
    for line in r.text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) \w+ .+$", line), line
            continue
        m = SAMPLE.match(line)
        assert m, f"not Prometheus text: {line!r}"
        samples.setdefault(m.group(1), []).append((m.group(2) or "", float(m.group(3))))
    return samples


def test_metrics_are_prometheus_text_and_count_traffic(server):
    before = scrape(server.url)
    client = server.openai()
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "count"}], max_tokens=12,
                                       temperature=0)
    server.http.post("/v1/chat/completions", json={"model": "missing", "messages": []})
    after = scrape(server.url)
    for name in ("dflashkit_requests_total", "dflashkit_generated_tokens_total", "dflashkit_queue_depth",
                 "dflashkit_running_sequences", "dflashkit_acceptance_length_bucket",
                 "dflashkit_time_to_first_token_seconds_bucket", "dflashkit_time_per_output_token_seconds_count"):
        assert name in after, name
    requests = dict(after["dflashkit_requests_total"])
    assert requests['{endpoint="/v1/chat/completions",status="200"}'] >= 1
    assert requests['{endpoint="/v1/chat/completions",status="400"}'] >= 1
    generated = after["dflashkit_generated_tokens_total"][0][1] - before["dflashkit_generated_tokens_total"][0][1]
    assert generated == r.usage.completion_tokens
    accept = after["dflashkit_acceptance_length_bucket"]
    counts = [v for _, v in accept]
    assert counts == sorted(counts) and accept[-1][0] == '{le="+Inf"}'
    assert accept[-1][1] == after["dflashkit_acceptance_length_count"][0][1]
    steps = after["dflashkit_acceptance_length_count"][0][1] - before["dflashkit_acceptance_length_count"][0][1]
    assert steps == r.model_extra["dflash"]["steps"]
    ttft = after["dflashkit_time_to_first_token_seconds_count"][0][1]
    assert ttft == before["dflashkit_time_to_first_token_seconds_count"][0][1] + 1
    assert after["dflashkit_running_sequences"][0][1] == 0 and after["dflashkit_queue_depth"][0][1] == 0


def test_served_greedy_answers_equal_plain_decoding(server):
    tokenizer, eos = server.gen.tokenizer, server.gen.tokenizer.eos_token_id
    for text in ["Hello there", "The weather today is", "x"]:
        prompt = tokenizer.encode(text)
        r = server.http.post("/v1/completions", json={"model": MODEL, "prompt": prompt, "max_tokens": 40,
                                                      "temperature": 0}).json()
        plain = reference_greedy(server.gen.reference, prompt, 40)
        if eos in plain:
            plain = plain[:plain.index(eos) + 1]
        assert r["usage"]["completion_tokens"] == len(plain)
        assert r["choices"][0]["text"] == tokenizer.decode(plain, skip_special_tokens=True)
        assert r["choices"][0]["finish_reason"] == ("stop" if plain[-1] == eos else "length")
