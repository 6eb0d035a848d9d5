"""DraftConfig: the published DFlash `config.json`, read, validated and written back unchanged.

The authors' checkpoints are a Qwen3-style config plus `block_size`, `num_target_layers` and
`dflash_config` (target_layer_ids, mask_token_id). Unknown keys are kept so a round trip through
dflashkit never drops fields that vLLM, SGLang or the reference implementation read.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

ARCHITECTURE = "DFlashDraftModel"
_INT_FIELDS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
               "vocab_size", "num_target_layers", "mask_token_id", "head_dim", "block_size", "max_position_embeddings",
               "sliding_window")
_FLOAT_FIELDS = ("rms_norm_eps", "rope_theta", "input_embedding_scale", "output_multiplier", "final_logit_softcapping")
_NULLABLE = ("head_dim", "sliding_window", "final_logit_softcapping")  # null: derived or off


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_types(values: dict[str, Any]) -> None:
    """A hand-edited config with "64" or null where a number belongs fails here, naming the field, instead of
    deep inside torch (or, for a string of layer ids, being read digit by digit)."""
    for key, value in values.items():
        if value is None and key in _NULLABLE:
            continue
        if key in _INT_FIELDS and not _is_int(value):
            raise ConfigError(f"draft config: {key} must be an integer, got {value!r}")
        if key in _FLOAT_FIELDS and not (_is_int(value) or isinstance(value, float)):
            raise ConfigError(f"draft config: {key} must be a number, got {value!r}")
    ids = values.get("target_layer_ids")
    if ids is not None and not (isinstance(ids, list) and all(_is_int(i) for i in ids)):
        raise ConfigError(f"draft config: target_layer_ids must be a list of integers, got {ids!r}")


def default_target_layer_ids(num_target_layers: int, num_draft_layers: int) -> list[int]:
    """Spread evenly between layer 1 and layer L-3, as the published drafters do."""
    if num_draft_layers == 1:
        return [num_target_layers // 2]
    start, end = 1, num_target_layers - 3
    return [round(start + i * (end - start) / (num_draft_layers - 1)) for i in range(num_draft_layers)]


@dataclass
class DraftConfig:
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    num_target_layers: int
    mask_token_id: int
    head_dim: int | None = None
    block_size: int = 16
    target_layer_ids: list[int] | None = None
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None
    max_position_embeddings: int = 32768
    attention_bias: bool = False
    hidden_act: str = "silu"
    layer_types: list[str] | None = None
    sliding_window: int | None = None
    is_causal: bool | None = None
    input_embedding_scale: float = 1.0
    output_multiplier: float = 1.0
    final_logit_softcapping: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.target_layer_ids is None:
            self.target_layer_ids = default_target_layer_ids(self.num_target_layers, self.num_hidden_layers)
        self.target_layer_ids = [int(i) for i in self.target_layer_ids]
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        positive = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                    "num_key_value_heads", "vocab_size", "num_target_layers", "head_dim")
        for name in positive:
            if int(getattr(self, name)) <= 0:
                raise ConfigError(f"draft config: {name} must be positive, got {getattr(self, name)}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(
                f"draft config: num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})")
        if self.block_size < 2:
            raise ConfigError(f"draft config: block_size must be >= 2, got {self.block_size}")
        if not self.target_layer_ids:
            raise ConfigError("draft config: target_layer_ids is empty")
        bad = [i for i in self.target_layer_ids if not 0 <= i < self.num_target_layers]
        if bad:
            raise ConfigError(
                f"draft config: target_layer_ids {bad} out of range for a target with "
                f"{self.num_target_layers} layers (valid: 0..{self.num_target_layers - 1})")
        if not 0 <= self.mask_token_id < self.vocab_size:
            raise ConfigError(f"draft config: mask_token_id {self.mask_token_id} not in vocab of {self.vocab_size}")
        if self.layer_types is not None:
            if len(self.layer_types) != self.num_hidden_layers:
                raise ConfigError(
                    f"draft config: layer_types has {len(self.layer_types)} entries for "
                    f"{self.num_hidden_layers} layers")
            unknown = set(self.layer_types) - {"full_attention", "sliding_attention"}
            if unknown:
                raise ConfigError(f"draft config: unknown layer_types {sorted(unknown)}")
            if "sliding_attention" in self.layer_types and not self.sliding_window:
                raise ConfigError("draft config: sliding_attention layers need sliding_window")

    def layer_type(self, layer: int) -> str:
        return self.layer_types[layer] if self.layer_types else "full_attention"

    def layer_is_causal(self, layer: int) -> bool:
        """Sliding layers are causal inside the block unless `is_causal` says otherwise (reference semantics)."""
        if self.is_causal is not None:
            return bool(self.is_causal)
        return self.layer_type(layer) == "sliding_attention"

    def layer_window(self, layer: int) -> int | None:
        return self.sliding_window if self.layer_type(layer) == "sliding_attention" else None

    # ------------------------------------------------------------ json format
    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "DraftConfig":
        raw = dict(raw)
        dflash = dict(raw.pop("dflash_config", None) or {})
        rope = raw.pop("rope_parameters", None) or {}
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        values: dict[str, Any] = {}
        for key in list(raw):
            if key in known:
                values[key] = raw.pop(key)
        for key in ("target_layer_ids", "mask_token_id", "block_size", "input_embedding_scale",
                    "output_multiplier", "final_logit_softcapping"):
            if key in dflash:
                values[key] = dflash.pop(key)
        if "rope_theta" not in values and "rope_theta" in rope:
            values["rope_theta"] = rope["rope_theta"]
        if values.get("rope_scaling") is None and rope.get("rope_type", "default") != "default":
            values["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
        if values.get("mask_token_id") is None:
            raise ConfigError("draft config: dflash_config.mask_token_id is missing")
        if values.get("num_target_layers") is None:
            raise ConfigError("draft config: num_target_layers is missing")
        missing = [f for f in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                               "vocab_size") if f not in values]
        if missing:
            raise ConfigError(f"draft config: missing fields {missing}")
        values.setdefault("num_key_value_heads", values["num_attention_heads"])
        _check_types(values)
        extra = raw
        if dflash:
            extra["dflash_config"] = dflash
        return cls(**values, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.extra)
        data = asdict(self)
        data.pop("extra")
        dflash = dict(out.pop("dflash_config", {}) or {})
        dflash["target_layer_ids"] = data.pop("target_layer_ids")
        dflash["mask_token_id"] = data.pop("mask_token_id")
        for key in ("input_embedding_scale", "output_multiplier", "final_logit_softcapping", "is_causal"):
            default = DraftConfig.__dataclass_fields__[key].default
            if data[key] == default:
                data.pop(key)
        if data["layer_types"] is None:
            data.pop("layer_types")
        if data["rope_scaling"] is None:
            data.pop("rope_scaling")
        out.update(data)
        out["dflash_config"] = dflash
        out.setdefault("architectures", [ARCHITECTURE])
        out.setdefault("model_type", "qwen3")
        out.setdefault("tie_word_embeddings", False)
        out.setdefault("use_sliding_window", self.layer_types is not None
                       and "sliding_attention" in self.layer_types)
        out.setdefault("attention_dropout", 0.0)
        return out

    @classmethod
    def from_file(cls, path: str | Path) -> "DraftConfig":
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError as exc:
            trained = path.parent / "draft" / path.name  # --draft given train's --out rather than its draft/
            hint = (f" (a `dflashkit train --out` directory: its drafter is {trained.parent})"
                    if trained.is_file() else "")
            raise ConfigError(f"draft config not found: {path}{hint}") from exc
        except json.JSONDecodeError as exc:
            raise ConfigError(f"draft config {path} is not valid JSON: {exc}") from exc
        arch = raw.get("architectures") or [ARCHITECTURE]
        if not any("DFlash" in a for a in arch):
            raise ConfigError(f"{path}: architectures={arch} is not a DFlash drafter")
        if "DFlash2DraftModel" in arch:
            raise ConfigError(f"{path}: DFlash2DraftModel (conv + candidate selector) is not supported yet")
        return cls.from_dict(raw)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
