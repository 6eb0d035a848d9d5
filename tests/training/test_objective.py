"""The loss over a pruned vocabulary: the full loss when nothing is dropped; else CE over the kept logits only,
dropped labels out of the loss but counted as wrong drafts."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.nn import functional as F

from dflashkit import DFlashDraft, DraftConfig
from dflashkit.training.blocks import make_blocks
from dflashkit.training.forward import layer_masks
from dflashkit.training.objective import BlockObjective, block_stats

VOCAB, T = 50, 4


def setup(seed: int = 0):
    """A random drafter, frozen target tensors, features and a batch of blocks (2 rows, 3 anchors each)."""
    cfg = DraftConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=8, vocab_size=VOCAB, num_target_layers=6, mask_token_id=VOCAB - 1,
                      block_size=T, target_layer_ids=[1, 3])
    draft = DFlashDraft(cfg).init_weights(seed=seed, std=0.2)
    g = torch.Generator().manual_seed(seed)
    embed, head = torch.randn(VOCAB, 32, generator=g), torch.randn(VOCAB, 32, generator=g)
    length = 16
    tokens = torch.randint(0, VOCAB - 1, (2, length), generator=g)
    loss_mask = torch.zeros(2, length, dtype=torch.bool)
    loss_mask[:, 4:] = True
    lengths = torch.tensor([length, length - 3])
    anchors, valid = torch.tensor([[4, 8, 11], [5, 9, 0]]), torch.tensor([[True, True, True], [True, True, False]])
    blocks = make_blocks(tokens, loss_mask, lengths, anchors, valid, T, VOCAB - 1)
    feats = torch.randn(2, length, 64, generator=g)
    return draft, embed, head, feats, blocks, layer_masks(draft, anchors, length)


def run(objective, feats, blocks, masks):
    loss, stats = objective(feats, blocks, masks)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in objective.draft.named_parameters()}
    return loss.detach(), stats, grads


def full_logits(draft, embed, head, feats, blocks, masks) -> torch.Tensor:
    """Logits over the whole vocabulary at the labelled slots, as the unpruned objective computes them."""
    seen = []

    def logits(hidden, weight):
        seen.append(DFlashDraft.logits(draft, hidden, weight))
        return seen[-1]

    draft.logits = logits  # an instance attribute: shadows the method for this call only
    with torch.no_grad():
        BlockObjective(draft, embed, head)(feats, blocks, masks)
    del draft.logits
    return seen[0]


def test_kept_set_of_every_id_gives_the_full_loss_and_gradients():
    draft, embed, head, feats, blocks, masks = setup()
    full = run(BlockObjective(copy.deepcopy(draft), embed, head), feats, blocks, masks)
    kept = torch.randperm(VOCAB, generator=torch.Generator().manual_seed(1))  # every id, shuffled
    pruned = run(BlockObjective(copy.deepcopy(draft), embed, head, kept=kept), feats, blocks, masks)
    torch.testing.assert_close(pruned[0], full[0])
    for name in full[2]:
        torch.testing.assert_close(pruned[2][name], full[2][name], msg=name)
    for key in ("acc", "tau", "tau_h", "acc_k", "ce"):
        torch.testing.assert_close(pruned[1][key], full[1][key], msg=key)
    assert float(pruned[1]["in_vocab"]) == 1.0


def test_strict_subset_loss_is_ce_over_kept_logits_and_dropped_labels_count_wrong():
    draft, embed, head, feats, blocks, masks = setup()
    sel = blocks.label_mask
    logits = full_logits(draft, embed, head, feats, blocks, masks)  # [N, VOCAB]; labels do not change them
    n = logits.shape[0]
    # drop the full-vocabulary favourite of the first third of the slots, and label those slots with it:
    # right for a full-vocabulary drafter, out of reach (so wrong) for the pruned one
    first = torch.arange(n) < n // 3
    dropped = logits[first].argmax(-1).unique()
    kept = torch.tensor([i for i in range(VOCAB) if i not in dropped.tolist()])
    best_kept = kept[logits[:, kept].argmax(-1)]
    g = torch.Generator().manual_seed(2)
    labels = torch.where(first, logits.argmax(-1), kept[torch.randint(0, len(kept), (n,), generator=g)])
    labels = torch.where(~first & (torch.arange(n) % 2 == 0), best_kept, labels)  # half the rest right
    blocks.labels[sel] = labels

    loss, stats = BlockObjective(draft, embed, head, kept=kept[torch.randperm(len(kept), generator=g)])(
        feats, blocks, masks)

    in_kept = torch.isin(labels, kept)
    assert (~in_kept).any() and in_kept.any()
    logp = F.log_softmax(logits[:, kept].double(), -1)
    index = (labels[:, None] == kept[None]).long().argmax(-1)  # label's place in kept (meaningless if dropped)
    ce = -logp.gather(1, index[:, None])[:, 0]
    w = BlockObjective(draft, embed, head).weights[torch.arange(sel.shape[1]) % T].expand_as(sel)[sel].double()
    expected = (ce * w)[in_kept].sum() / w[in_kept].sum()
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(stats["ce"].double(), ce[in_kept].mean(), rtol=1e-5, atol=1e-6)

    correct = in_kept & (best_kept == labels)
    assert correct.any() and not correct[first].any()
    ref = block_stats(correct, sel, T)
    for key in ("acc", "tau", "tau_h", "acc_k"):
        torch.testing.assert_close(stats[key], ref[key], msg=key)
    torch.testing.assert_close(stats["in_vocab"], in_kept.float().mean())
    full_acc = BlockObjective(draft, embed, head)(feats, blocks, masks)[1]["acc"]
    assert float(stats["acc"]) < float(full_acc)  # the same drafts score higher with the dropped labels reachable



def distill_setup():
    """A tiny HF target, its real features, a drafter of its width, and blocks over random tokens."""
    from trainkit import VOCAB as TV
    from trainkit import tiny_llama

    from dflashkit.training.features import TargetFeatures

    model = tiny_llama()
    cfg = DraftConfig(hidden_size=64, intermediate_size=48, num_hidden_layers=1, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=16, vocab_size=TV, num_target_layers=4, mask_token_id=TV - 1,
                      block_size=T, target_layer_ids=[1, 2])
    draft = DFlashDraft(cfg).init_weights(seed=0, std=0.2)
    g = torch.Generator().manual_seed(3)
    length = 16
    tokens = torch.randint(0, TV - 2, (2, length), generator=g)
    loss_mask = torch.zeros(2, length, dtype=torch.bool)
    loss_mask[:, 3:] = True
    anchors, valid = torch.tensor([[3, 7, 13], [4, 10, 0]]), torch.tensor([[True, True, True], [True, True, False]])
    blocks = make_blocks(tokens, loss_mask, torch.tensor([length, length - 2]), anchors, valid, T, TV - 1)
    return model, TargetFeatures(model, [1, 2]), draft, tokens, blocks, layer_masks(draft, anchors, length)


def hand_losses(model, draft, tokens, feats, blocks, masks, kept):
    """Decayed hard and soft CE written out slot by slot, the target's log-probs from its own forward (float64)."""
    embed, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    draft_logits = full_logits(draft, embed, head, feats, blocks, masks).double()  # [N, vocab], label_mask order
    with torch.no_grad():
        target_logits = model(input_ids=tokens).logits.double()
    weights = BlockObjective(draft, embed, head).weights.double()
    hard, soft, w = [], [], []
    for j, (r, q) in enumerate(blocks.label_mask.nonzero().tolist()):
        label, pos = int(blocks.labels[r, q]), int(blocks.positions[r, q])
        if label not in kept.tolist():
            continue
        logp_draft = F.log_softmax(draft_logits[j, kept], -1)
        logp_target = F.log_softmax(target_logits[r, pos - 1, kept], -1)  # its prediction of the token at pos
        hard.append(-logp_draft[kept.tolist().index(label)])
        soft.append(-(logp_target.exp() * logp_draft).sum())
        w.append(weights[q % T])
    hard, soft, w = torch.stack(hard), torch.stack(soft), torch.stack(w)
    return (hard * w).sum() / w.sum(), (soft * w).sum() / w.sum(), soft.mean()


@pytest.mark.parametrize("pruned", [False, True])
def test_distill_loss_is_the_decayed_soft_ce_against_the_targets_next_token_distribution(pruned):
    model, features, draft, tokens, blocks, masks = distill_setup()
    vocab = model.config.vocab_size
    # pruned: half the ids, shuffled (some labels leave the loss)
    kept = torch.randperm(vocab, generator=torch.Generator().manual_seed(4))[: vocab // 2] if pruned else None
    feats = features(tokens)
    hard, soft, soft_mean = hand_losses(model, draft, tokens, feats, blocks, masks,
                                        torch.arange(vocab) if kept is None else kept)
    got = {}
    for w in (0.0, 0.5, 1.0):
        objective = BlockObjective(draft, features.embed_weight, features.head_weight, kept=kept, distill=w)
        extra = ()
        if w:
            again, logits = features.with_logits(tokens, *objective.label_sources(blocks), kept)
            assert torch.equal(again, feats)
            extra = (logits,)
        with torch.no_grad():
            got[w] = objective(feats, blocks, masks, *extra)
    torch.testing.assert_close(got[1.0][0].double(), soft, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got[0.0][0].double(), hard, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got[0.5][0], (got[0.0][0] + got[1.0][0]) / 2)
    for w in (0.5, 1.0):  # logged stats stay hard-label based; soft_ce joins them
        for key in ("ce", "acc", "tau", "acc_k"):
            torch.testing.assert_close(got[w][1][key], got[0.0][1][key], msg=key)
        torch.testing.assert_close(got[w][1]["soft_ce"].double(), soft_mean, rtol=1e-5, atol=1e-6)
    assert "soft_ce" not in got[0.0][1]


def test_no_distill_is_exactly_the_hard_label_loss():
    """distill=0: the same ops as before it existed, so bit-equal losses (and no target logits asked for)."""
    draft, embed, head, feats, blocks, masks = setup()
    sel = blocks.label_mask
    logits = full_logits(draft, embed, head, feats, blocks, masks)
    w = BlockObjective(draft, embed, head).weights[torch.arange(sel.shape[1]) % T].expand_as(sel)[sel]
    expected = (F.cross_entropy(logits.float(), blocks.labels[sel], reduction="none") * w).sum() / w.sum()
    with torch.no_grad():
        loss = BlockObjective(draft, embed, head, distill=0.0)(feats, blocks, masks)[0]
    assert torch.equal(loss, expected)
    with pytest.raises(ValueError, match="distill"):
        BlockObjective(draft, embed, head, distill=0.5)(feats, blocks, masks)


@pytest.mark.parametrize("family", ["qwen3", "gemma2", "gemma3"])
def test_target_logits_at_chosen_positions_are_the_models_own(family):
    """The model's forward still runs its head code (Gemma's final softcap included), on fewer positions and ids."""
    from tiny_models import tiny_hf

    from dflashkit.training.features import TargetFeatures

    model = tiny_hf(family)
    features, head = TargetFeatures(model, [1, 3]), model.lm_head
    tokens = torch.randint(0, 96, (2, 12), generator=torch.Generator().manual_seed(5))
    rows, cols, kept = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 5, 11, 11]), torch.randperm(96)[:40]
    with torch.no_grad():
        full = model(input_ids=tokens).logits[rows, cols]
    for ids in (None, kept):
        feats, logits = features.with_logits(tokens, rows, cols, ids)
        torch.testing.assert_close(logits, full if ids is None else full[:, ids], rtol=0, atol=1e-12)
        assert torch.equal(feats, features(tokens))
    assert model.lm_head is head  # the stand-in head is gone


def test_soft_cross_entropy_gradient():
    from dflashkit.training.objective import _CrossEntropy

    g = torch.Generator().manual_seed(6)
    q = torch.randn(5, 7, generator=g, dtype=torch.float64).softmax(-1)
    logits = torch.randn(5, 7, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: _CrossEntropy.apply(q, F.log_softmax(z, -1)), (logits,))
