"""Adapter over any transformers causal LM: batched static-cache forward, hidden features, embedding, head.

The model's own forward runs unchanged (so logit scaling, softcapping, Gemma's scaled embeddings and
per-layer inputs stay exactly the model's); only attention is redirected to `static_cache`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ConfigError
from . import static_cache
from .static_cache import Binding, StepState


def _attention_modules(model: nn.Module) -> list[nn.Module]:
    found = []
    for name, module in model.named_modules():
        if not isinstance(getattr(module, "layer_idx", None), int):
            continue
        if "self_attn" not in name.split(".")[-1] or any(t in name for t in ("vision", "audio", "encoder")):
            continue
        found.append(module)
    return found


def _length_dependent_rotaries(model: nn.Module) -> list[nn.Module]:
    """Rotary modules whose frequencies HF picks from the forward's length (`dynamic`, `longrope`)."""
    return [m for m in model.modules() if isinstance(getattr(m, "rope_type", None), str)
            and hasattr(m, "original_inv_freq") and (m.rope_type == "longrope" or "dynamic" in m.rope_type)]


class LengthwiseRope:
    """Per-token frequencies for `dynamic` / `longrope` RoPE, as HF's cached generation gives them.

    HF chooses these frequencies once per forward from max(position_ids) + 1. Decoding one sequence with
    a KV cache, that is the prompt length for the prompt's tokens and p + 1 for the token at position p;
    the engine's forwards see a prefill padded to 64 tokens, verify blocks reaching past the anchor,
    and other sequences' rows. Any of these switched a sequence to scaled frequencies that
    plain decoding would not use, so output depended on the padding, the block and the batch. Here each
    token gets the frequencies of its own length: a table filled by replaying HF's own update rule along
    one sequence's lengths 1..capacity, then a gather per forward (no host sync: graph safe)."""

    def __init__(self, module: nn.Module, state: StepState):
        self.module, self.state = module, state
        self.hf_forward = module.forward
        self.inv_freq = self.scaling = None
        module.forward = self.forward

    def build(self, capacity: int) -> None:
        m = self.module
        probe = torch.zeros(1, dtype=torch.float32, device=m.inv_freq.device)
        rows, scales = [m.original_inv_freq.float()], [float(m.attention_scaling)]  # row 0: unused
        with torch.no_grad():
            for length in range(1, capacity + 1):  # HF's update sees seq_len = position + 1 = length
                self.hf_forward(probe, torch.tensor([[length - 1]], device=probe.device))
                rows.append(m.inv_freq.detach().float().clone())
                scales.append(float(m.attention_scaling))
            self.hf_forward(probe, torch.zeros(1, 1, dtype=torch.long, device=probe.device))  # back to short
        self.inv_freq = torch.stack(rows)  # [capacity + 1, dim / 2]
        self.scaling = torch.tensor(scales, dtype=torch.float32, device=probe.device)

    def forward(self, x: torch.Tensor, position_ids: torch.Tensor, layer_type=None):
        """HF's rotary forward (fp32 outer product, cat, cos/sin times the attention scaling), per-token lengths."""
        if self.inv_freq is None:  # before `allocate` (its shape probe): HF's own
            return self.hf_forward(x, position_ids, *(() if layer_type is None else (layer_type,)))
        lengths = position_ids + 1
        if self.state.prompt_lens is not None:  # a prefill: prompt tokens take the prompt's length
            lengths = torch.maximum(lengths, self.state.prompt_lens[:, None])
        lengths = lengths.clamp(max=self.inv_freq.shape[0] - 1)
        freqs = self.inv_freq[lengths] * position_ids[..., None].float()  # [b, T, dim / 2]
        emb = torch.cat((freqs, freqs), dim=-1)
        scale = self.scaling[lengths][..., None]
        return (emb.cos() * scale).to(x.dtype), (emb.sin() * scale).to(x.dtype)


def _causal_limit(config, modules: list[nn.Module]) -> int:
    """Positions up to which plain causal attention over the static cache is the model's own (Llama 4).

    Chunked layers attend within chunks of `attention_chunk_size` only (a mask the cache's attention does not
    build), and NoPE layers with temperature tuning scale queries from position floor_scale - 1 on, reading the
    position from a KV cache the engine does not pass. Past either, answers differed from plain decoding."""
    limit = 1 << 62
    chunk = getattr(config, "attention_chunk_size", None)
    if chunk and "chunked_attention" in (getattr(config, "layer_types", None) or []):
        limit = int(chunk)
    for m in modules:
        if getattr(m, "attn_temperature_tuning", False) and not getattr(m, "use_rope", True):
            limit = min(limit, int(m.floor_scale) - 1)
    return limit


class TargetBase:
    """What every target path shares: the HF model, its embedding and head, the step state, stop tokens."""

    path = "base"

    def __init__(self, model: nn.Module, tokenizer=None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.num_layers = int(self.config.num_hidden_layers)
        self.hidden_size = int(self.config.hidden_size)
        embed = model.get_input_embeddings()
        head = model.get_output_embeddings()
        if embed is None or head is None:
            raise ConfigError(f"{type(model).__name__} has no input embedding or LM head; DFlash needs both")
        self.embed_weight: torch.Tensor = embed.weight
        self.lm_head_weight: torch.Tensor = head.weight
        self.vocab_size = int(self.lm_head_weight.shape[0])
        self.max_positions = int(getattr(self.config, "max_position_embeddings", 0) or 1 << 20)
        self.state = StepState()
        self.batch_size = 0
        self.capacity = 0
        self.compiled = False

    def eager(self):
        """Context in which compiled layers run eagerly (prefill: every prompt length is a new shape)."""
        import contextlib

        if self.compiled and hasattr(torch.compiler, "set_stance"):
            return torch.compiler.set_stance("force_eager")
        return contextlib.nullcontext()

    @property
    def device(self) -> torch.device:
        return self.embed_weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embed_weight.dtype

    def embed(self, token_ids: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """Raw embedding rows (the drafter applies its own `input_embedding_scale`)."""
        x = F.embedding(token_ids, self.embed_weight)
        return x * scale if scale != 1.0 else x

    def stop_token_ids(self) -> list[int]:
        """End-of-turn ids: generation config first, then model config, then tokenizer."""
        for source in (getattr(self.model, "generation_config", None), self.config,
                       self.tokenizer):
            ids = getattr(source, "eos_token_id", None) if source is not None else None
            if ids is not None:
                return [int(ids)] if isinstance(ids, int) else [int(i) for i in ids]
        return []


class TargetModel(TargetBase):
    """The verifier on any HF decoder. `forward` runs tokens at explicit per-sequence positions against the cache."""

    path = "generic"

    def __init__(self, model: nn.Module, tokenizer=None):
        super().__init__(model, tokenizer)
        self._bind()

    # ------------------------------------------------------------------ set-up
    def _bind(self) -> None:
        static_cache.register()
        modules = _attention_modules(self.model)
        if len(modules) != self.num_layers:
            raise ConfigError(f"found {len(modules)} attention modules in {type(self.model).__name__}, expected "
                              f"{self.num_layers}; this architecture is not supported")
        sources = {}
        for module in modules:
            if getattr(module, "store_full_length_kv", False):
                sources[getattr(module, "layer_type", None)] = module.layer_idx
        for module in modules:
            shared = bool(getattr(module, "is_kv_shared_layer", False))
            source = sources.get(getattr(module, "layer_type", None)) if shared else module.layer_idx
            if source is None:
                raise ConfigError(f"layer {module.layer_idx} shares K/V but no source layer was found")
            module._dflashkit_binding = Binding(self.state, source, writes=not shared)
        self._modules = modules
        self.max_positions = min(self.max_positions, _causal_limit(self.config, modules))
        self.model.set_attn_implementation(static_cache.ATTN_IMPLEMENTATION)
        self._ropes = [LengthwiseRope(m, self.state) for m in _length_dependent_rotaries(self.model)]
        self._shapes = self._probe()  # at load: also refuses attention kwargs the static cache would drop

    def compile_layers(self) -> None:
        """torch.compile each decoder layer (fuses norms, RoPE, MLP elementwise): fewer, bigger kernels.

        Decode shapes are few (batch and cache buckets); prefill runs eagerly (see `eager()`)."""
        import torch._dynamo

        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
        for module in self.model.modules():
            if isinstance(module, nn.ModuleList) and len(module) == self.num_layers:
                for layer in module:
                    layer.compile(dynamic=False)
                self.compiled = True
                return

    def allocate(self, batch_size: int, capacity: int) -> None:
        """Preallocate K/V for `batch_size` sequences of up to `capacity` positions (shapes probed at load)."""
        if batch_size == self.batch_size and capacity == self.capacity:
            return
        shapes = self._shapes
        self.state.k = [None] * self.num_layers
        self.state.v = [None] * self.num_layers
        for layer, (n_kv, k_dim, v_dim) in shapes.items():  # MLA (DeepSeek): values narrower than keys
            self.state.k[layer] = torch.zeros(batch_size, n_kv, capacity, k_dim, dtype=self.dtype, device=self.device)
            self.state.v[layer] = torch.zeros(batch_size, n_kv, capacity, v_dim, dtype=self.dtype, device=self.device)
        for rope in self._ropes:
            rope.build(capacity)
        self.batch_size, self.capacity = batch_size, capacity

    def _probe(self) -> dict[int, tuple[int, int, int]]:
        """One 2-token forward with a recording attention -> per cached layer: K/V heads, key head size, value
        head size. Raises ConfigError if an attention module passes an argument static_attention does not
        implement (see static_cache.HANDLED_KWARGS)."""
        shapes: dict[int, tuple[int, int, int]] = {}
        unsupported: dict[str, None] = {}

        def record(module, query, key, value, attention_mask, **kwargs):
            binding = module._dflashkit_binding
            if binding.writes:
                shapes[binding.cache_layer] = (key.shape[1], key.shape[3], value.shape[3])
            unsupported.update(dict.fromkeys(static_cache.unsupported_kwargs(module, attention_mask, kwargs)))
            return torch.zeros(query.shape[0], query.shape[2], query.shape[1], value.shape[3],
                               dtype=query.dtype, device=query.device), None

        from transformers import AttentionInterface

        AttentionInterface.register(static_cache.ATTN_IMPLEMENTATION, record)
        try:
            with torch.inference_mode():
                ids = torch.zeros(1, 2, dtype=torch.long, device=self.device)
                self.model(input_ids=ids, position_ids=torch.arange(2, device=self.device)[None], use_cache=False)
        except (RuntimeError, TypeError, ValueError, AttributeError) as e:  # the model's own forward cannot run
            raise ConfigError(f"{type(self.model).__name__}: a 2-token forward at load failed "
                              f"({type(e).__name__}: {e}); the generic target path cannot run this model") from e
        finally:
            static_cache.register()
        if unsupported:
            names = ", ".join(f"`{n}`" for n in unsupported)
            raise ConfigError(f"{getattr(self.config, 'model_type', type(self.model).__name__)} passes {names} to its "
                              "attention, which dflashkit's static cache does not implement: outputs would differ "
                              "from the model's, so it is refused (please report it)")
        return shapes

    # ------------------------------------------------------------------ forward
    def forward(self, tokens: torch.Tensor, positions: torch.Tensor, *, slot: int | torch.Tensor | None = None,
                kv_len: int | None = None, logits_to_keep: int | torch.Tensor = 0,
                layer_ids: list[int] | None = None,
                prompt_lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """tokens/positions [b, T] -> logits [b, T or keep, V], features [b, T, len(layer_ids) * hidden].

        Writes the tokens' K/V into the cache: rows 0..b-1, or the slots named by `slot` (prefill).
        `logits_to_keep`: the last k positions (int, 0 = all) or a 1-D tensor of positions.
        `prompt_lengths` [b]: in a (padded) prefill, each row's prompt length (length-dependent RoPE only).
        """
        self.state.begin(positions, slot, kv_len, prompt_lengths)
        out = self.model(input_ids=tokens, position_ids=positions, use_cache=False,
                         output_hidden_states=layer_ids is not None, logits_to_keep=logits_to_keep)
        features = None
        if layer_ids is not None:
            features = torch.cat([out.hidden_states[i + 1] for i in layer_ids], dim=-1)
        return out.logits, features
