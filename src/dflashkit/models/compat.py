"""Checks that a drafter fits a target, raised before any weights are used."""

from __future__ import annotations

from ..errors import ModelMismatchError
from .drafter import DFlashDraft
from .target import TargetModel


def check_compatible(target: TargetModel, draft: DFlashDraft) -> None:
    cfg = draft.config
    if cfg.hidden_size != target.hidden_size:
        raise ModelMismatchError(f"drafter hidden_size {cfg.hidden_size} != target hidden_size {target.hidden_size}; "
                                 "this drafter was trained for another target")
    if cfg.vocab_size != target.vocab_size:
        raise ModelMismatchError(f"drafter vocab_size {cfg.vocab_size} != target vocab size {target.vocab_size}")
    if cfg.num_target_layers != target.num_layers:
        raise ModelMismatchError(f"drafter expects a target with {cfg.num_target_layers} layers, "
                                 f"this target has {target.num_layers}")
    bad = [i for i in cfg.target_layer_ids if not 0 <= i < target.num_layers]
    if bad:
        raise ModelMismatchError(f"target_layer_ids {bad} out of range for a {target.num_layers}-layer target")
    if draft.fc.in_features != len(cfg.target_layer_ids) * target.hidden_size:
        raise ModelMismatchError(f"drafter fc takes {draft.fc.in_features} features, target gives "
                                 f"{len(cfg.target_layer_ids)} x {target.hidden_size}")
