"""Start-up warm-up: every block size is timed at every cache bucket, and the engine's answers do not change."""

from __future__ import annotations

from tiny_models import build_tiny, random_prompts, reference_greedy

from dflashkit import Generator, SamplingParams
from dflashkit.engine.warmup import cache_buckets, warm_up
from dflashkit.models.factory import random_draft


def test_cache_buckets_cover_every_length_up_to_the_capacity():
    assert cache_buckets(1088) == [256, 512, 1024, 1088]
    assert cache_buckets(200) == [200]


def test_warm_up_times_every_block_and_leaves_answers_and_acceptance_untouched():
    target, reference = build_tiny("llama", seed=21)
    gen = Generator(target, random_draft(target, block_size=8), max_batch=2, max_length=600)  # adaptive
    report = warm_up(gen)
    controller = gen.controller
    assert report["block_sizes"] == controller.candidates and report["runs"] >= len(controller.candidates) * 3
    assert {(1, b) for b in controller.candidates} <= set(controller.step_time)  # each timed after 2 replays
    assert not controller.trials and controller.fixed is None  # warm-up prompts teach nothing about acceptance
    prompts = random_prompts(2, seed=22)
    results = gen.generate(prompts, SamplingParams(max_new_tokens=20))
    assert [r.token_ids for r in results] == [reference_greedy(reference, p, 20) for p in prompts]


def test_warm_up_of_an_autoregressive_engine_uses_block_one():
    target, _ = build_tiny("llama", seed=23)
    gen = Generator(target, None, max_batch=1, max_length=300)
    assert warm_up(gen)["block_sizes"] == [1]
