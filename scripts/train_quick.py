"""One-GPU, time-boxed DFlash drafter training for a small target (datagen + training + tau check).

    python scripts/train_quick.py --target DIR --prompts prompts.jsonl --out OUT_DIR \
        [--datagen-s 180] [--train-s 300] [--layers 3]

Datagen: the target answers each prompt greedily with our engine (AR, batched, CUDA graphs).
Training: the DFlash objective (anchors inside responses, blocks [x_a, MASK...], context = target
features strictly before the anchor, block-sparse attention, CE weighted by exp(-(k-1)/gamma)).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time

import torch
from torch.nn import functional as F

from dflashkit import DFlashDraft, Generator, SamplingParams, make_target
from dflashkit.engine.generator import chat_prompt
from dflashkit.models.factory import draft_config_for


def log(**kw):
    print(json.dumps(kw), flush=True)


def datagen(gen: Generator, tok, prompts: list[str], budget_s: float, max_prompt: int, max_new: int,
            chunk: int) -> list[tuple[list[int], int]]:
    """-> [(prompt + response ids, response start)] until the time budget runs out."""
    data, start = [], time.time()
    ids_all = []
    for p in prompts:
        ids = chat_prompt(tok, [{"role": "user", "content": p}])
        if len(ids) <= max_prompt:
            ids_all.append(ids)
    for i in range(0, len(ids_all), chunk):
        if time.time() - start > budget_s:
            break
        batch = ids_all[i:i + chunk]
        results = gen.generate(batch, SamplingParams(max_new_tokens=max_new), speculative=False)
        for ids, r in zip(batch, results):
            if len(r.token_ids) >= 8:
                data.append((ids + r.token_ids, len(ids)))
        log(datagen_sequences=len(data), tokens=sum(len(s) - p for s, p in data),
            elapsed_s=round(time.time() - start, 1))
    return data


def block_batch(seqs, block: int, anchors: int, pad_id: int, device):
    """Build one training batch: tokens, positions, block inputs/labels/anchors and the attention mask."""
    length = max(len(s) for s, _ in seqs)
    b = len(seqs)
    tokens = torch.full((b, length), pad_id, dtype=torch.long)
    valid = torch.zeros(b, length, dtype=torch.bool)
    anchor_pos = torch.zeros(b, anchors, dtype=torch.long)
    anchor_ok = torch.zeros(b, anchors, dtype=torch.bool)
    for i, (s, start) in enumerate(seqs):
        tokens[i, :len(s)] = torch.tensor(s)
        valid[i, :len(s)] = True
        cands = list(range(max(start, 1) - 1, len(s) - 1))  # anchor = last verified token; labels follow it
        pick = sorted(random.sample(cands, min(anchors, len(cands))))
        anchor_pos[i, :len(pick)] = torch.tensor(pick)
        anchor_ok[i, :len(pick)] = True
    offs = torch.arange(block)
    q_pos = anchor_pos[:, :, None] + offs  # [b, A, T]
    label_pos = q_pos.clamp(max=length - 1)
    labels = tokens.gather(1, label_pos.flatten(1)).view(b, anchors, block)
    label_ok = anchor_ok[:, :, None] & (q_pos < length) & valid.gather(1, label_pos.flatten(1)).view(b, anchors, block)
    label_ok[:, :, 0] = False  # offset 0 is the anchor itself
    # mask: block query (a, t) sees context keys j < anchor_a, and every key of its own block
    ctx_keys = torch.arange(length)
    see_ctx = (ctx_keys[None, None, :] < anchor_pos[:, :, None]) & valid[:, None, :]  # [b, A, L]
    see_ctx = see_ctx[:, :, None, :].expand(b, anchors, block, length).reshape(b, anchors * block, length)
    blk = torch.arange(anchors).repeat_interleave(block)
    see_blk = (blk[:, None] == blk[None, :])[None].expand(b, -1, -1)
    mask = torch.cat([see_ctx, see_blk], dim=-1)[:, None]  # [b, 1, A*T, L + A*T]
    return {k: v.to(device) for k, v in dict(tokens=tokens, q_pos=q_pos.flatten(1), labels=labels.flatten(1),
                                              label_ok=label_ok.flatten(1), mask=mask,
                                              anchor_tok=tokens.gather(1, anchor_pos)).items()}


def train(args):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    random.seed(0)
    tok = AutoTokenizer.from_pretrained(args.target)
    prompts = [json.loads(line)["prompt"] for line in open(args.prompts)]
    held_out, prompts = prompts[:args.eval_prompts], prompts[args.eval_prompts:]

    engine_model = AutoModelForCausalLM.from_pretrained(args.target, dtype=torch.bfloat16).to(dev).eval()
    target = make_target(engine_model, tok)
    gen = Generator(target, None, tok, max_batch=args.datagen_batch, max_length=args.max_prompt + args.max_new + 8)
    t0 = time.time()
    if args.data_cache and os.path.exists(args.data_cache):
        data = torch.load(args.data_cache)
    else:
        data = datagen(gen, tok, prompts, args.datagen_s, args.max_prompt, args.max_new, args.datagen_batch * 2)
        if args.data_cache:
            torch.save(data, args.data_cache)
    datagen_s = time.time() - t0
    del gen
    torch.cuda.empty_cache()

    # frozen target for features (plain transformers attention), drafter initialised from the target's top layers
    feat_model = AutoModelForCausalLM.from_pretrained(args.target, dtype=torch.bfloat16).to(dev).eval()
    for p in feat_model.parameters():
        p.requires_grad_(False)
    cfg = draft_config_for(target, num_layers=args.layers, block_size=args.block)
    draft = DFlashDraft(cfg).init_weights(0)
    layers = feat_model.model.layers
    with torch.no_grad():
        for i, layer in enumerate(draft.layers):
            src = layers[len(layers) - args.layers + i]
            for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
                getattr(layer.self_attn, name).weight.copy_(getattr(src.self_attn, name).weight.float())
            for name in ("gate_proj", "up_proj", "down_proj"):
                getattr(layer.mlp, name).weight.copy_(getattr(src.mlp, name).weight.float())
            layer.input_layernorm.weight.copy_(src.input_layernorm.weight.float())
            layer.post_attention_layernorm.weight.copy_(src.post_attention_layernorm.weight.float())
        draft.norm.weight.copy_(feat_model.model.norm.weight.float())
    if args.init_draft:  # continue from an earlier run's drafter
        draft.load_state_dict(DFlashDraft.from_pretrained(args.init_draft, dtype=torch.float32).state_dict())
    draft = draft.to(dev).train()
    embed = feat_model.get_input_embeddings().weight
    head = feat_model.get_output_embeddings().weight
    opt = torch.optim.AdamW(draft.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.01)
    gamma = args.gamma
    weights = torch.exp(-(torch.arange(args.block, device=dev) - 1).clamp(min=0) / gamma)
    weights = weights.repeat(args.anchors)[None]
    t0, step = time.time(), 0
    data.sort(key=lambda item: len(item[0]))
    while time.time() - t0 < args.train_s:
        idx = random.randrange(0, max(1, len(data) - args.batch))
        seqs = data[idx:idx + args.batch]  # similar lengths together: little padding
        batch = block_batch(seqs, args.block, args.anchors, tok.eos_token_id or 0, dev)
        with torch.no_grad():
            out = feat_model(input_ids=batch["tokens"], output_hidden_states=True)
            feats = torch.cat([out.hidden_states[i + 1] for i in cfg.target_layer_ids], -1)
        elapsed = time.time() - t0
        progress = min(1.0, elapsed / args.train_s)  # time-boxed: cosine over wall time, not steps
        lr = args.lr * min(1.0, (step + 1) / args.warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
        for g in opt.param_groups:
            g["lr"] = lr
        with torch.autocast(dev, dtype=torch.bfloat16):
            b, length = batch["tokens"].shape
            ctx = draft.project_context(feats)
            pos = torch.arange(length, device=dev)[None].expand(b, -1)
            kv = draft.context_kv(ctx, pos)
            blocks = torch.full_like(batch["q_pos"], cfg.mask_token_id)
            blocks.view(b, args.anchors, args.block)[:, :, 0] = batch["anchor_tok"]
            noise = F.embedding(blocks, embed) * cfg.input_embedding_scale
            hidden = draft(noise, batch["q_pos"], kv, mask=batch["mask"])
            logits = draft.logits(hidden, head).float()
        ce = F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), reduction="none").view_as(batch["labels"])
        w = weights * batch["label_ok"]
        loss = (ce * w).sum() / w.sum().clamp(min=1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(draft.parameters(), 1.0)
        opt.step()
        if step % 50 == 0:
            with torch.no_grad():
                acc = ((logits.argmax(-1) == batch["labels"]) & batch["label_ok"]).sum() / batch["label_ok"].sum()
            log(step=step, loss=round(loss.item(), 4), acc=round(acc.item(), 4), lr=lr, elapsed_s=round(elapsed, 1))
        step += 1
    train_s = time.time() - t0
    draft = draft.to(torch.bfloat16).eval()
    draft.save_pretrained(args.out)

    gen = Generator(target, draft, tok, max_batch=16, max_length=args.max_prompt + 320, block_size=args.block)
    ids = [chat_prompt(tok, [{"role": "user", "content": p}]) for p in held_out]
    ids = [i for i in ids if len(i) < args.max_prompt]
    res = gen.generate(ids, SamplingParams(max_new_tokens=256))
    tau = sum(a for r in res for a in r.acceptance_lengths) / max(1, sum(r.steps for r in res))
    summary = dict(sequences=len(data), train_steps=step, datagen_s=round(datagen_s, 1), train_s=round(train_s, 1),
                   tau_heldout_sharegpt=round(tau, 3), layers=args.layers, block=args.block)
    log(**summary)
    json.dump(summary, open(f"{args.out}/train_summary.json", "w"), indent=1)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--target", required=True)
    p.add_argument("--prompts", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--datagen-s", type=float, default=180)
    p.add_argument("--train-s", type=float, default=300)
    p.add_argument("--datagen-batch", type=int, default=128)
    p.add_argument("--max-prompt", type=int, default=384)
    p.add_argument("--max-new", type=int, default=384)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--block", type=int, default=16)
    p.add_argument("--anchors", type=int, default=48)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=6e-4)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--gamma", type=float, default=7.0)
    p.add_argument("--eval-prompts", type=int, default=32)
    p.add_argument("--data-cache", default=None, help="save/reuse the generated data here")
    p.add_argument("--init-draft", default=None, help="start from this drafter (same shape)")
    train(p.parse_args())


if __name__ == "__main__":
    main()
