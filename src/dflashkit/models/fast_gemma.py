"""Fast verifier for Gemma 4 (and Gemma 3) text decoders: the `fast_decoder` recipe with Gemma's layer.

As `FastDecoderTarget`: one plain-torch function per layer, fused QKV and gate/up weights (the HF Linears keep
views of them), RoPE gathered from tables built at `allocate`, the same static cache and attention. What Gemma
adds is reproduced in HF's order and dtypes, so the logits equal the generic path's:
  * embeddings times sqrt(hidden) (HF's own scaled-embedding module), final logit softcapping;
  * RMSNorm in float32 with the weight applied before the cast back (Gemma 3: 1 + w and rsqrt; Gemma 4: w and
    pow(-0.5)); q/k norms, Gemma 4's unscaled v norm, norms after attention and around the MLP, GELU-tanh;
  * sliding-window layers (`StepState`'s mask, q - k < window, as HF) and full layers, each type with its own
    RoPE table (Gemma 4 full layers: proportional RoPE, wider heads, possibly fewer K/V heads and K = V);
  * Gemma 4 KV sharing (the last layers read, never write, the cache of the last earlier layer of their type),
    per-layer input embeddings (E2B/E4B; computed once a forward by the model's own methods), layer scalars;
  * Gemma4ForConditionalGeneration run on text: multimodal placeholder ids read as padding, as HF does.
Anything else is refused by `unsupported_reason`, and `make_target` falls back to the generic path.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from .attention import gqa_attention
from .fast_decoder import STATIC_ROPE, _fuse, cache_rows, compile_layer, keep_rows, placement_reason, rope
from .linear import linear
from .target import TargetBase

# text model_type -> (HF classes whose forward this path reproduces, the class names of their parts)
FAMILY = {
    "gemma4_text": (("Gemma4ForCausalLM", "Gemma4ForConditionalGeneration"),
                    {"model": "Gemma4TextModel", "layer": "Gemma4TextDecoderLayer", "attn": "Gemma4TextAttention",
                     "mlp": "Gemma4TextMLP", "norm": "Gemma4RMSNorm"}),
    "gemma3_text": (("Gemma3ForCausalLM",),
                    {"model": "Gemma3TextModel", "layer": "Gemma3DecoderLayer", "attn": "Gemma3Attention",
                     "mlp": "Gemma3MLP", "norm": "Gemma3RMSNorm"}),
}
DISPATCHED = tuple(FAMILY)  # the text model types `make_target` sends here
ROPE_TYPES = STATIC_ROPE | {"proportional"}  # proportional: Gemma 4 full layers, a fixed table too
LAYER_TYPES = ("sliding_attention", "full_attention")


def _text_model(model: nn.Module) -> nn.Module | None:
    inner = getattr(model, "model", None)
    return getattr(inner, "language_model", inner) if type(model).__name__.endswith("ConditionalGeneration") else inner


def unsupported_reason(model: nn.Module) -> str | None:
    """Why `model` cannot take the Gemma fast path, or None when it can."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    kind = getattr(config, "model_type", None)
    if kind not in FAMILY:
        return f"model_type {kind!r} is not one of {sorted(FAMILY)}"
    classes, parts = FAMILY[kind]
    if type(model).__name__ not in classes:
        return f"{type(model).__name__} is not one of {list(classes)}"
    decoder = _text_model(model)
    if type(decoder).__name__ != parts["model"]:
        return f"its text model is {type(decoder).__name__}, not {parts['model']}"
    if getattr(config, "enable_moe_block", False):
        return "it has mixture-of-experts blocks"
    if getattr(config, "use_bidirectional_attention", None) in (True, "all"):
        return "it uses bidirectional attention"
    if getattr(config, "attn_logit_softcapping", None) is not None:
        return "it sets attention logit softcapping"
    if type(model).__name__.endswith("ConditionalGeneration") and config.pad_token_id is None:
        return "its text config has no pad_token_id (HF maps multimodal placeholders to it)"
    types = list(config.layer_types[:config.num_hidden_layers])
    if any(t not in LAYER_TYPES for t in types):
        return f"layer types {sorted(set(types))} are not all in {list(LAYER_TYPES)}"
    for layer_type in set(types):
        rope_type = (config.rope_parameters.get(layer_type) or {}).get("rope_type")
        if rope_type not in ROPE_TYPES:
            return f"{layer_type} rope type {rope_type!r} is not one of {sorted(ROPE_TYPES)}"
        if not hasattr(decoder.rotary_emb, f"{layer_type}_inv_freq"):
            return f"its rotary embedding has no {layer_type} frequencies"
    sources = _kv_sources(decoder.layers[:config.num_hidden_layers])
    if isinstance(sources, str):
        return sources
    for i, layer in enumerate(decoder.layers[:config.num_hidden_layers]):
        attn, mlp = layer.self_attn, layer.mlp
        for part, want in (("layer", layer), ("attn", attn), ("mlp", mlp)):
            if type(want).__name__ != parts[part]:
                return f"layer {i} {part} is {type(want).__name__}, not {parts[part]}"
        names = {"self_attn": ["q_proj", "o_proj"], "mlp": ["gate_proj", "up_proj", "down_proj"], "": []}
        if sources[i] == i:
            names["self_attn"] += ["k_proj"] + (["v_proj"] if getattr(attn, "v_proj", None) is not None else [])
        if getattr(config, "hidden_size_per_layer_input", None):
            names[""] += ["per_layer_input_gate", "per_layer_projection"]
        for part, linears in names.items():
            owner = getattr(layer, part) if part else layer
            for name in linears:
                if type(getattr(owner, name, None)) is not nn.Linear:
                    return f"layer {i} {part or 'layer'}.{name} is not a plain nn.Linear (quantized or patched)"
        norms = [m for m in layer.modules() if "norm" in type(m).__name__.lower()]
        if any(type(m).__name__ != parts["norm"] for m in norms):
            return f"layer {i} has a norm that is not {parts['norm']}"
    if type(decoder.norm).__name__ != parts["norm"]:
        return f"its final norm is not {parts['norm']}"
    if type(model.get_output_embeddings()) is not nn.Linear:
        return "its LM head is not a plain nn.Linear"
    return placement_reason(model)


def _kv_sources(layers) -> list[int] | str:
    """Layer i attends over the cache of layer sources[i]: itself, or for a Gemma 4 KV-sharing layer the last
    earlier layer of its type that keeps full-length K/V (as HF's `shared_kv_states`)."""
    keeper = {layer.self_attn.layer_type: i for i, layer in enumerate(layers)
              if getattr(layer.self_attn, "store_full_length_kv", False)}
    sources = []
    for i, layer in enumerate(layers):
        if not getattr(layer.self_attn, "is_kv_shared_layer", False):
            sources.append(i)
        elif keeper.get(layer.self_attn.layer_type, i) < i:
            sources.append(keeper[layer.self_attn.layer_type])
        else:
            return f"layer {i} shares K/V but no earlier layer of its type keeps them"
    return sources


# ---------------------------------------------------------------------- the per-layer math (compiled)
def gemma_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float, gemma3: bool) -> torch.Tensor:
    """As HF's Gemma RMSNorms: statistics and weight in float32, one cast back at the end (weight None: v norm)."""
    xf = x.float()
    mean_square = xf.pow(2).mean(-1, keepdim=True) + eps
    out = xf * (torch.rsqrt(mean_square) if gemma3 else torch.pow(mean_square, -0.5))
    if weight is not None:
        out = out * (1.0 + weight.float() if gemma3 else weight.float())
    return out.type_as(x)


def gemma_layer(x, weights, cos, sin, mask, k_cache, v_cache, rows, positions, kv_index, kv_len, per_layer, spec):
    """One Gemma decoder layer over the static cache (argument meanings as `fast_decoder.decoder_layer`).

    spec's `kv`: "qkv" projects and writes K/V, "qk" too with V = K's projection (Gemma 4 attention_k_eq_v),
    "read" only reads the cache (KV sharing). `per_layer`: this layer's per-layer input, or None."""
    (ln_in, wqkv, bqkv, q_norm, k_norm, wo, bo, ln_attn, ln_ff, wgu, wd, ln_ff_out,
     ple_gate, ple_proj, ple_norm, scalar) = weights
    heads, kv_heads, dim, eps, scale, act, kv, gemma3 = spec
    b, t, _ = x.shape
    h = gemma_norm(x, ln_in, eps, gemma3)
    proj = linear(h, wqkv, bqkv)
    if kv == "read":
        q = proj
    else:
        sizes = [heads * dim, kv_heads * dim] + ([kv_heads * dim] if kv == "qkv" else [])
        q, k, *rest = proj.split(sizes, dim=-1)
        k = k.view(b, t, kv_heads, dim)
        v = rest[0].view(b, t, kv_heads, dim) if rest else k
        k = rope(gemma_norm(k, k_norm, eps, gemma3), cos, sin)
        if not gemma3:  # Gemma 4: V is RMS-normed too, without a weight
            v = gemma_norm(v, None, eps, gemma3)
        k_cache[rows, :, positions] = k.to(k_cache.dtype)
        v_cache[rows, :, positions] = v.to(v_cache.dtype)
    q = rope(gemma_norm(q.view(b, t, heads, dim), q_norm, eps, gemma3), cos, sin)
    keys, values = k_cache[kv_index, :, :kv_len], v_cache[kv_index, :, :kv_len]
    out = gqa_attention(q.transpose(1, 2), keys, values, mask, scale)  # [b, H, T, D]
    out = linear(out.transpose(1, 2).reshape(b, t, heads * dim), wo, bo)
    x = x + gemma_norm(out, ln_attn, eps, gemma3)
    gate, up = linear(gemma_norm(x, ln_ff, eps, gemma3), wgu).chunk(2, dim=-1)
    x = x + gemma_norm(linear(act(gate) * up, wd), ln_ff_out, eps, gemma3)
    if ple_gate is not None:  # Gemma 4 per-layer input: gated, projected, normed, added
        gated = act(linear(x, ple_gate)) * per_layer
        x = x + gemma_norm(linear(gated, ple_proj), ple_norm, eps, gemma3)
    return x if scalar is None else (x * scalar).to(x.dtype)  # HF scales in place: same dtype rule


class FastGemmaTarget(TargetBase):
    """Drop-in for `TargetModel` on Gemma 4 / Gemma 3 text models (see `unsupported_reason`); same contract."""

    path = "fast"

    def __init__(self, model: nn.Module, tokenizer=None):
        reason = unsupported_reason(model)
        if reason is not None:
            raise ConfigError(f"the fast Gemma target path cannot run {type(model).__name__}: {reason}")
        super().__init__(model, tokenizer)
        decoder = _text_model(model)
        self._gemma3 = self.config.model_type == "gemma3_text"
        self._embed = decoder.embed_tokens  # HF's module: the sqrt(hidden) scale rounded to the dtype as HF
        self._decoder = decoder if getattr(self.config, "hidden_size_per_layer_input", None) else None
        self._rotary = decoder.rotary_emb
        self._norm = (decoder.norm.weight, float(decoder.norm.eps))
        self._softcap = getattr(self.config, "final_logit_softcapping", None)
        self._placeholders = self._pad = None
        if type(model).__name__.endswith("ConditionalGeneration"):
            ids = [getattr(model.config, f"{m}_token_id", None) for m in ("image", "video", "audio")]
            self._placeholders = torch.tensor([i for i in ids if i is not None], device=self.device)
            self._pad = int(self.config.pad_token_id)
        layers = decoder.layers[:self.num_layers]
        self.num_heads = int(self.config.num_attention_heads)
        self._sources = _kv_sources(layers)
        self._types = [layer.self_attn.layer_type for layer in layers]
        self._windows = [layer.self_attn.sliding_window if t == "sliding_attention" else None
                         for layer, t in zip(layers, self._types, strict=True)]
        self._specs, self._kv_shapes = [], {}
        with torch.no_grad():
            self._weights = [self._layer_weights(i, layer) for i, layer in enumerate(layers)]
        self._layer = gemma_layer
        self._tables = {}

    def _layer_weights(self, i: int, layer: nn.Module) -> tuple:
        attn, mlp = layer.self_attn, layer.mlp
        dim = int(attn.head_dim)
        kv_heads = self.num_heads // int(attn.num_key_value_groups)
        if self._sources[i] != i:
            kv, wqkv, bqkv = "read", attn.q_proj.weight.detach(), attn.q_proj.bias
            bqkv = None if bqkv is None else bqkv.detach()
        else:
            kv = "qkv" if getattr(attn, "v_proj", None) is not None else "qk"
            wqkv, bqkv = _fuse(attn, ("q_proj", "k_proj", "v_proj") if kv == "qkv" else ("q_proj", "k_proj"))
            self._kv_shapes[i] = (kv_heads, dim)
        eps = float(layer.input_layernorm.eps)
        self._specs.append((self.num_heads, kv_heads, dim, eps, float(attn.scaling), mlp.act_fn, kv, self._gemma3))
        wgu, _ = _fuse(mlp, ("gate_proj", "up_proj"))

        def w(module):
            return None if module is None or getattr(module, "weight", None) is None else module.weight.detach()

        ple = getattr(layer, "per_layer_input_gate", None) is not None and self._decoder is not None
        scalar = getattr(layer, "layer_scalar", None)
        return (w(layer.input_layernorm), wqkv, bqkv, w(attn.q_norm), w(getattr(attn, "k_norm", None)), w(attn.o_proj),
                None if attn.o_proj.bias is None else attn.o_proj.bias.detach(), w(layer.post_attention_layernorm),
                w(layer.pre_feedforward_layernorm), wgu, w(mlp.down_proj), w(layer.post_feedforward_layernorm),
                w(layer.per_layer_input_gate) if ple else None, w(layer.per_layer_projection) if ple else None,
                w(layer.post_per_layer_input_norm) if ple else None, scalar)

    # ------------------------------------------------------------------ set-up
    def compile_layers(self) -> None:
        """torch.compile the layer function once (weights are inputs; one graph per distinct layer spec)."""
        self._layer = compile_layer(gemma_layer)
        self.compiled = True

    def allocate(self, batch_size: int, capacity: int) -> None:
        """K/V for the layers that write them (KV-sharing layers hold None, as the generic path) and one RoPE
        table per layer type, from the model's own rotary module (every rope type exactly as HF)."""
        if batch_size == self.batch_size and capacity == self.capacity:
            return
        self.state.k = [None] * self.num_layers
        self.state.v = [None] * self.num_layers
        for i, (kv_heads, dim) in self._kv_shapes.items():
            self.state.k[i] = torch.zeros(batch_size, kv_heads, capacity, dim, dtype=self.dtype, device=self.device)
            self.state.v[i] = torch.zeros_like(self.state.k[i])
        with torch.no_grad():
            probe = torch.zeros(1, dtype=self.dtype, device=self.device)
            positions = torch.arange(capacity, device=self.device)[None]
            self._tables = {t: tuple(c[0] for c in self._rotary(probe, positions, t)) for t in set(self._types)}
        self.batch_size, self.capacity = batch_size, capacity

    # ------------------------------------------------------------------ forward
    def forward(self, tokens: torch.Tensor, positions: torch.Tensor, *, slot: int | torch.Tensor | None = None,
                kv_len: int | None = None, logits_to_keep: int | torch.Tensor = 0,
                layer_ids: list[int] | None = None,
                prompt_lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """As `TargetModel.forward`: logits [b, T or keep, V] and features [b, T, len(layer_ids) * hidden].
        `prompt_lengths` is unused: length-dependent RoPE, the one thing it serves, is refused here."""
        self.state.begin(positions, slot, kv_len)
        rows, kv_index = cache_rows(slot, positions)
        length = kv_len or self.capacity
        if self._placeholders is not None and self._placeholders.numel():
            tokens = torch.where(torch.isin(tokens, self._placeholders), self._pad, tokens)
        x = self._embed(tokens)
        per_layer = None
        if self._decoder is not None:  # [b, T, layers, d]: the model's own PLE code, once a forward
            per_layer = self._decoder.project_per_layer_inputs(x, self._decoder.get_per_layer_inputs(tokens, x))
        rope_at = {t: (c[positions][:, :, None], s[positions][:, :, None]) for t, (c, s) in self._tables.items()}
        wanted = set(layer_ids or ())
        kept = {}
        for i, weights in enumerate(self._weights):
            spec, source = self._specs[i], self._sources[i]
            mask = self.state.grouped_mask(self._windows[i], length, self.dtype, spec[0] // spec[1])
            x = self._layer(x, weights, *rope_at[self._types[i]], mask, self.state.k[source], self.state.v[source],
                            rows, positions, kv_index, length, None if per_layer is None else per_layer[:, :, i], spec)
            if i in wanted:
                kept[i] = x
        x = gemma_norm(x, *self._norm, self._gemma3)
        if self.num_layers - 1 in wanted:  # HF's last hidden state is the final-normed one
            kept[self.num_layers - 1] = x
        features = torch.cat([kept[i] for i in layer_ids], dim=-1) if layer_ids is not None else None
        logits = linear(keep_rows(x, logits_to_keep), self.lm_head_weight)
        if self._softcap is not None:
            logits = torch.tanh(logits / self._softcap) * self._softcap
        return logits, features

