"""Training forward (many blocks per row, one pass) equals the drafter run block by block as in inference."""

from __future__ import annotations

import pytest
import torch

from dflashkit import DFlashDraft, DraftConfig
from dflashkit.models.drafter import MaskSpec
from dflashkit.training.blocks import block_attention_mask
from dflashkit.training.flex_mask import mask_rule
from dflashkit.training.forward import draft_blocks, layer_masks


def tiny_draft(layer_types=None, window=None) -> DFlashDraft:
    cfg = DraftConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=8, vocab_size=50, num_target_layers=6, mask_token_id=49,
                      block_size=4, target_layer_ids=[1, 3], layer_types=layer_types, sliding_window=window)
    return DFlashDraft(cfg).init_weights(seed=3, std=0.2).double()


def test_training_forward_equals_drafter_forward_with_the_same_mask():
    draft = tiny_draft()
    torch.manual_seed(0)
    b, ctx_len, anchors = 2, 10, torch.tensor([[2, 6], [4, 7]])
    feats = torch.randn(b, ctx_len, 64, dtype=torch.float64)
    ctx_kv = draft.context_kv(draft.project_context(feats), torch.arange(ctx_len)[None].expand(b, -1))
    q_pos = (anchors[:, :, None] + torch.arange(4)).flatten(1)
    noise = torch.randn(b, 8, 32, dtype=torch.float64)
    mask = block_attention_mask(anchors, ctx_len, 4)
    ours = draft_blocks(draft, noise, q_pos, ctx_kv, [mask, mask])
    theirs = draft(noise, q_pos, ctx_kv, mask=mask)
    torch.testing.assert_close(ours, theirs)


def test_all_blocks_in_one_pass_equal_each_block_alone_as_at_inference():
    for layer_types, window in ((None, None), (["sliding_attention", "full_attention"], 3)):
        draft = tiny_draft(layer_types, window)
        torch.manual_seed(1)
        ctx_len, anchors = 12, torch.tensor([[3, 5, 9]])
        feats = torch.randn(1, ctx_len, 64, dtype=torch.float64)
        ctx = draft.project_context(feats)
        noise = torch.randn(1, 12, 32, dtype=torch.float64)
        q_pos = (anchors[:, :, None] + torch.arange(4)).flatten(1)
        full_kv = draft.context_kv(ctx, torch.arange(ctx_len)[None])
        together = draft_blocks(draft, noise, q_pos, full_kv, layer_masks(draft, anchors, ctx_len))
        for i, a in enumerate(anchors[0].tolist()):
            pos = torch.arange(a)[None]
            kv = draft.context_kv(ctx[:, :a], pos)  # the engine's cache: context strictly before the anchor
            spec = MaskSpec(q_pos=q_pos[:, i * 4:(i + 1) * 4], k_pos=pos, k_valid=torch.ones(1, a, dtype=torch.bool))
            alone = draft(noise[:, i * 4:(i + 1) * 4], spec.q_pos, kv, mask_spec=spec)
            torch.testing.assert_close(together[:, i * 4:(i + 1) * 4], alone)



def test_flex_mask_rule_is_the_dense_mask_element_for_element():
    """The sparse FlexAttention path (used on GPUs) sees exactly the keys the dense SDPA mask allows."""
    anchors = torch.tensor([[0, 0, 0], [2, 7, 11], [1, 3, 16], [5, 6, 7]])  # row 0: padding anchors
    ctx_len, t = 19, 4
    b, q, kv = torch.arange(4), torch.arange(3 * t), torch.arange(ctx_len + 3 * t)
    for causal, window in ((False, None), (True, None), (False, 3), (True, 5), (False, 40)):
        dense = block_attention_mask(anchors, ctx_len, t, causal, window)[:, 0]
        rule = mask_rule(anchors, ctx_len, t, causal, window)
        grid = rule(b[:, None, None], 0, q[None, :, None], kv[None, None, :])
        assert torch.equal(grid, dense), (causal, window)


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_flex_masks_give_the_dense_masks_outputs():
    for layer_types, window in ((None, None), (["sliding_attention", "full_attention"], 5)):
        draft = tiny_draft(layer_types, window).float()
        torch.manual_seed(2)
        ctx_len = 20
        anchors = torch.tensor([[0, 0, 0, 0], [2, 7, 11, 15], [1, 3, 5, 16]])
        feats = torch.randn(3, ctx_len, 64)
        with torch.no_grad():  # FlexAttention has no backward on the CPU
            ctx_kv = draft.context_kv(draft.project_context(feats), torch.arange(ctx_len)[None].expand(3, -1))
            q_pos = (anchors[:, :, None] + torch.arange(4)).flatten(1)
            noise = torch.randn(3, 16, 32)
            dense = draft_blocks(draft, noise, q_pos, ctx_kv, layer_masks(draft, anchors, ctx_len))
            flex = draft_blocks(draft, noise, q_pos, ctx_kv, layer_masks(draft, anchors, ctx_len, flex=True))
        torch.testing.assert_close(flex, dense, atol=1e-5, rtol=1e-4)


def test_attention_choice_flex_needs_a_gpu_and_auto_falls_back_to_sdpa():
    from dflashkit.errors import ConfigError
    from dflashkit.training.train_config import TrainConfig
    from dflashkit.training.trainer import _flex_attention

    cpu = torch.device("cpu")
    assert _flex_attention("auto", cpu) is False and _flex_attention("sdpa", cpu) is False
    with pytest.raises(ConfigError, match="--attention flex needs a CUDA device"):
        _flex_attention("flex", cpu)
    with pytest.raises(ConfigError, match="attention must be"):
        TrainConfig(data=["x"], attention="dense").validate()
