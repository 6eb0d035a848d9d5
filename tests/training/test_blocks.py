"""The block geometry: anchors, block inputs/labels and the attention mask, against their definitions."""

from __future__ import annotations

import itertools

import pytest
import torch

from dflashkit.training.blocks import block_attention_mask, make_blocks, sample_anchors


def mask_by_definition(anchors: list[int], ctx_len: int, t: int, causal: bool, window: int | None):
    """Query (i, k) sees context j iff j < a_i; block key (i', k') iff i' == i (+ causal, window rules)."""
    q_count = len(anchors) * t
    out = torch.zeros(q_count, ctx_len + q_count, dtype=torch.bool)
    for i, a in enumerate(anchors):
        for k in range(t):
            q, qpos = i * t + k, a + k
            for j in range(ctx_len):
                out[q, j] = j < a and (window is None or qpos - j < window)
            for i2, a2 in enumerate(anchors):
                for k2 in range(t):
                    kpos = a2 + k2
                    ok = i2 == i
                    ok = ok and (not causal or kpos <= qpos)
                    ok = ok and (window is None or (qpos - kpos < window and (causal or kpos - qpos < window)))
                    out[q, ctx_len + i2 * t + k2] = ok
    return out


@pytest.mark.parametrize("causal,window", [(False, None), (True, None), (True, 3), (False, 2)])
def test_block_mask_matches_definition(causal, window):
    for anchors, ctx_len, t in itertools.product([[0], [2, 5], [1, 3, 4], [6, 2]], [7, 9], [2, 3, 4]):
        got = block_attention_mask(torch.tensor([anchors]), ctx_len, t, causal, window)[0, 0]
        want = mask_by_definition(anchors, ctx_len, t, causal, window)
        assert torch.equal(got, want), (anchors, ctx_len, t, causal, window)


def test_block_mask_rows_are_independent_per_batch():
    anchors = torch.tensor([[1, 4], [3, 0]])
    got = block_attention_mask(anchors, 8, 3)
    for row in range(2):
        assert torch.equal(got[row, 0], mask_by_definition(anchors[row].tolist(), 8, 3, False, None))


def test_make_blocks_inputs_positions_labels():
    tokens = torch.tensor([[10, 11, 12, 13, 14, 15, 0, 0]])
    loss_mask = torch.tensor([[0, 0, 1, 1, 1, 1, 0, 0]], dtype=torch.bool)  # response = positions 2..5
    lengths = torch.tensor([6])
    anchors, valid = torch.tensor([[2, 4]]), torch.tensor([[True, True]])
    b = make_blocks(tokens, loss_mask, lengths, anchors, valid, block_size=3, mask_token_id=99)
    assert b.input_ids.tolist() == [[12, 99, 99, 14, 99, 99]]
    assert b.positions.tolist() == [[2, 3, 4, 4, 5, 6]]
    assert b.label_mask.tolist() == [[False, True, True, False, True, False]]  # offset 0 never; 6 is past the end
    assert b.labels[b.label_mask].tolist() == [13, 14, 15]


def test_padding_anchors_carry_no_labels():
    tokens = torch.arange(10)[None]
    loss_mask = torch.ones(1, 10, dtype=torch.bool)
    b = make_blocks(tokens, loss_mask, torch.tensor([10]), torch.tensor([[3, 0]]), torch.tensor([[True, False]]), 4, 99)
    assert not b.label_mask[0, 4:].any()


def test_anchors_are_response_tokens_with_a_next_label():
    loss_mask = torch.zeros(3, 12, dtype=torch.bool)
    loss_mask[0, 4:10] = True
    loss_mask[1, 1:12] = True
    loss_mask[2, 11] = True  # a single response token: no anchor has a label
    lengths = torch.tensor([10, 12, 12])
    anchors, valid = sample_anchors(loss_mask, lengths, max_anchors=4, generator=torch.Generator().manual_seed(0))
    for row in range(2):
        picked = anchors[row][valid[row]].tolist()
        assert len(picked) == 4 and picked == sorted(set(picked))
        assert all(loss_mask[row, a] and loss_mask[row, a + 1] and a + 1 < lengths[row] for a in picked)
    assert not valid[2].any()
    every, _ = sample_anchors(loss_mask[:1], lengths[:1], 100, torch.Generator())
    assert every[0].tolist() == [4, 5, 6, 7, 8]
