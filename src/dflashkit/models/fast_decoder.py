"""Fast verifier for the Llama family (Llama, Qwen2, Qwen3, Mistral without sliding window).

`TargetModel` runs the HF forward: right for any model, but each layer is many small kernels (mask building,
RoPE recomputed per forward, separate q/k/v and gate/up matmuls, hidden-state tuples). Here each layer is one
plain-torch function with fused QKV and gate_up weights and RoPE gathered from a table built once per
`allocate`, over the same static cache (`StepState`, `gqa_attention`): same numbers, and a small branch-free
graph for torch.compile and CUDA graphs. The HF layers are re-pointed at slices of the fused weights, so the
model is held once and stays usable on its own.
"""

from __future__ import annotations

import os

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ConfigError
from .attention import gqa_attention
from .linear import linear
from .target import TargetBase

# model_type -> the HF class whose forward this path reproduces (a subclass may change it: refused)
FAMILY = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM",
          "mistral": "MistralForCausalLM"}
# RoPE types whose frequencies do not depend on the sequence length (a table built once is exact)
STATIC_ROPE = {"default", "linear", "llama3", "yarn"}
_LINEARS = {"self_attn": ("q_proj", "k_proj", "v_proj", "o_proj"), "mlp": ("gate_proj", "up_proj", "down_proj")}


def unsupported_reason(model: nn.Module) -> str | None:
    """Why `model` cannot take the fast path, or None when it can."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    kind = getattr(config, "model_type", None)
    if kind not in FAMILY:
        return f"model_type {kind!r} is not one of {sorted(FAMILY)}"
    if type(model).__name__ != FAMILY[kind]:
        return f"{type(model).__name__} is not {FAMILY[kind]}"
    rope_type = (getattr(config, "rope_parameters", None) or {}).get("rope_type")
    if rope_type not in STATIC_ROPE:
        return f"rope type {rope_type!r} is not one of {sorted(STATIC_ROPE)} (its frequencies depend on length)"
    if getattr(config, "sliding_window", None) is not None or any(
            t != "full_attention" for t in getattr(config, "layer_types", None) or []):
        return "it uses sliding-window attention"
    decoder = getattr(model, "model", None)
    if getattr(decoder, "rotary_emb", None) is None or getattr(decoder.rotary_emb, "rope_type", None) != rope_type:
        return "its rotary embedding module was not found"
    for i, layer in enumerate(decoder.layers[:config.num_hidden_layers]):
        for part, names in _LINEARS.items():
            for name in names:
                if type(getattr(getattr(layer, part), name, None)) is not nn.Linear:
                    return f"layer {i} {part}.{name} is not a plain nn.Linear (quantized or patched)"
    return placement_reason(model)


def placement_reason(model: nn.Module) -> str | None:
    """Why the weights are not where a fast path can hold them (one device, materialised), or None."""
    params = list(model.parameters())
    if any(hasattr(m, "_hf_hook") for m in model.modules()) or len({p.device for p in params}) != 1:
        return "its weights are spread over devices or offloaded (accelerate hooks)"
    if any(p.is_meta or not p.is_floating_point() for p in params):
        return "some weights are not materialised floating-point tensors"
    return None


def compile_layer(fn):
    """torch.compile a layer function once for all layers (weights are inputs), with room for its shapes."""
    import torch._dynamo

    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    if os.environ.get("DFLASHKIT_INDUCTOR_TUNING", "1") == "1":
        # tune the fused kernels' launch configs (as gpt-fast): Qwen3-8B shape, H100, batch 1,
        # 6.59 -> 5.99 ms a forward; costs a little more compile time. DFLASHKIT_INDUCTOR_TUNING=0 skips it.
        import torch._inductor.config as inductor

        inductor.coordinate_descent_tuning = True
    return torch.compile(fn, dynamic=False)


def cache_rows(slot: int | torch.Tensor | None, positions: torch.Tensor):
    """(rows, kv_index): the cache row of each token of `positions` [b, T], and the rows the queries read."""
    b = positions.shape[0]
    if slot is None:
        return torch.arange(b, device=positions.device)[:, None].expand_as(positions), slice(0, b)
    if isinstance(slot, torch.Tensor):
        return slot[:, None].expand_as(positions), slot
    return torch.full_like(positions, slot), slice(slot, slot + 1)


def keep_rows(x: torch.Tensor, logits_to_keep: int | torch.Tensor) -> torch.Tensor:
    """The positions whose logits are wanted: the last `n` (0 = all), or the given indices."""
    if isinstance(logits_to_keep, int):
        return x[:, -logits_to_keep:] if logits_to_keep else x
    return x[:, logits_to_keep]


# ---------------------------------------------------------------------- the per-layer math (compiled)
def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """As HF's LlamaRMSNorm: statistics in fp32, then back to the input dtype before the weight."""
    dtype = x.dtype
    x = x.float()
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x.to(dtype)


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [b, T, H, D]; cos/sin [b, T, 1, D] (rotate-half convention, as HF)."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


def decoder_layer(x, weights, cos, sin, mask, k_cache, v_cache, rows, positions, kv_index, kv_len, spec):
    """One pre-norm decoder layer over the static cache: write this step's K/V, attend, MLP.

    `rows`/`positions` [b, T]: where each token's K/V goes; `kv_index` (slice or slot tensor) and `kv_len`:
    which cache rows and how many positions the queries read. All branching is on constants."""
    ln1, wqkv, bqkv, q_norm, k_norm, wo, bo, ln2, wgu, bgu, wd, bd = weights
    heads, kv_heads, dim, eps, qk_eps, scale, act = spec
    b, t, _ = x.shape
    h = rms_norm(x, ln1, eps)
    q, k, v = linear(h, wqkv, bqkv).split([heads * dim, kv_heads * dim, kv_heads * dim], dim=-1)
    q, k, v = q.view(b, t, heads, dim), k.view(b, t, kv_heads, dim), v.view(b, t, kv_heads, dim)
    if q_norm is not None:  # Qwen3: per-head RMSNorm before RoPE
        q, k = rms_norm(q, q_norm, qk_eps), rms_norm(k, k_norm, qk_eps)
    q, k = rope(q, cos, sin), rope(k, cos, sin)
    k_cache[rows, :, positions] = k.to(k_cache.dtype)
    v_cache[rows, :, positions] = v.to(v_cache.dtype)
    keys, values = k_cache[kv_index, :, :kv_len], v_cache[kv_index, :, :kv_len]
    out = gqa_attention(q.transpose(1, 2), keys, values, mask, scale)  # [b, H, T, D]
    x = x + linear(out.transpose(1, 2).reshape(b, t, heads * dim), wo, bo)
    gate, up = linear(rms_norm(x, ln2, eps), wgu, bgu).chunk(2, dim=-1)
    return x + linear(act(gate) * up, wd, bd)


def _fuse(module: nn.Module, names: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Concatenate the named Linears' weights (and biases); the Linears then hold views of the result."""
    linears = [getattr(module, n) for n in names]
    weight = torch.cat([lin.weight.detach() for lin in linears])
    bias = None
    if any(lin.bias is not None for lin in linears):
        bias = torch.cat([lin.bias.detach() if lin.bias is not None else weight.new_zeros(lin.out_features)
                          for lin in linears])
    start = 0
    for lin in linears:
        end = start + lin.out_features
        lin.weight = nn.Parameter(weight[start:end], requires_grad=lin.weight.requires_grad)
        if lin.bias is not None:
            lin.bias = nn.Parameter(bias[start:end], requires_grad=lin.bias.requires_grad)
        start = end
    return weight, bias


class FastDecoderTarget(TargetBase):
    """Drop-in for `TargetModel` on Llama-family models (see `unsupported_reason`); same `forward` contract."""

    path = "fast"

    def __init__(self, model: nn.Module, tokenizer=None):
        reason = unsupported_reason(model)
        if reason is not None:
            raise ConfigError(f"the fast target path cannot run {type(model).__name__}: {reason}")
        super().__init__(model, tokenizer)
        decoder = model.model
        self._rotary = decoder.rotary_emb
        self._norm = (decoder.norm.weight, float(decoder.norm.variance_epsilon))
        head = model.get_output_embeddings()
        self._head_bias = head.bias
        layers = decoder.layers[:self.num_layers]
        first = layers[0]
        attn = first.self_attn
        self.num_heads = int(self.config.num_attention_heads)
        self.num_kv_heads = int(self.config.num_key_value_heads)
        self.head_dim = int(attn.head_dim)
        qk_eps = float(attn.q_norm.variance_epsilon) if hasattr(attn, "q_norm") else 0.0
        act = F.silu if self.config.hidden_act == "silu" else first.mlp.act_fn
        self._spec = (self.num_heads, self.num_kv_heads, self.head_dim, float(first.input_layernorm.variance_epsilon),
                      qk_eps, float(attn.scaling), act)
        with torch.no_grad():
            self._weights = [self._layer_weights(layer) for layer in layers]
        self._layer = decoder_layer
        self._cos = self._sin = None

    @staticmethod
    def _layer_weights(layer: nn.Module) -> tuple:
        attn, mlp = layer.self_attn, layer.mlp
        wqkv, bqkv = _fuse(attn, ("q_proj", "k_proj", "v_proj"))
        wgu, bgu = _fuse(mlp, ("gate_proj", "up_proj"))
        q_norm = getattr(attn, "q_norm", None)
        k_norm = getattr(attn, "k_norm", None)
        return (layer.input_layernorm.weight.detach(), wqkv, bqkv,
                None if q_norm is None else q_norm.weight.detach(), None if k_norm is None else k_norm.weight.detach(),
                attn.o_proj.weight.detach(), None if attn.o_proj.bias is None else attn.o_proj.bias.detach(),
                layer.post_attention_layernorm.weight.detach(), wgu, bgu,
                mlp.down_proj.weight.detach(), None if mlp.down_proj.bias is None else mlp.down_proj.bias.detach())

    # ------------------------------------------------------------------ set-up
    def compile_layers(self) -> None:
        """torch.compile the layer function once (all layers share its graph: weights are inputs)."""
        self._layer = compile_layer(decoder_layer)
        self.compiled = True

    def allocate(self, batch_size: int, capacity: int) -> None:
        """K/V for `batch_size` sequences of `capacity` positions, and the RoPE table up to `capacity`."""
        if batch_size == self.batch_size and capacity == self.capacity:
            return
        shape = (batch_size, self.num_kv_heads, capacity, self.head_dim)
        self.state.k = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in range(self.num_layers)]
        self.state.v = [torch.zeros_like(k) for k in self.state.k]
        with torch.no_grad():  # the model's own rotary module: every rope type and scaling exactly as HF
            probe = torch.zeros(1, dtype=self.dtype, device=self.device)
            cos, sin = self._rotary(probe, torch.arange(capacity, device=self.device)[None])
        self._cos, self._sin = cos[0], sin[0]
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
        mask = self.state.grouped_mask(None, length, self.dtype, self.num_heads // self.num_kv_heads)
        cos, sin = self._cos[positions][:, :, None], self._sin[positions][:, :, None]
        x = F.embedding(tokens, self.embed_weight)
        wanted = set(layer_ids or ())
        kept = {}
        for i, weights in enumerate(self._weights):
            x = self._layer(x, weights, cos, sin, mask, self.state.k[i], self.state.v[i], rows, positions,
                            kv_index, length, self._spec)
            if i in wanted:
                kept[i] = x
        x = rms_norm(x, *self._norm)
        if self.num_layers - 1 in wanted:  # HF's last hidden state is the final-normed one
            kept[self.num_layers - 1] = x
        features = torch.cat([kept[i] for i in layer_ids], dim=-1) if layer_ids is not None else None
        return linear(keep_rows(x, logits_to_keep), self.lm_head_weight, self._head_bias), features
