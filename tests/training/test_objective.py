"""The loss over a pruned vocabulary: the full loss when nothing is dropped; else CE over the kept logits only,
dropped labels out of the loss but counted as wrong drafts."""

from __future__ import annotations

import copy

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
