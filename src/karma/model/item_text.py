"""Item text as token inputs: the (N, L) token matrix, and item states read by the frozen backbone.

`model.encoder.item_text_pooling` chooses what the item token x_i = P_item(...) starts from:

- `input_embeddings` (default): the mean of the LLM's input embeddings over the item's text tokens.
  No layer of the LLM reads the text.
- `backbone`: the frozen, untruncated backbone (before LoRA, before `backbone.num_layers` cuts the
  user-side stack) reads each item's text once per catalog, through its first `item_text_layers`
  decoder layers (None = all). The hidden states (the decoder's final norm applied, as in
  `last_hidden_state`) are pooled over the text tokens (`item_text_readout`: mean or last token),
  then the whole (N, d) matrix is scaled by one scalar so that its mean row norm equals that of the
  input-embedding pooling: the item token starts at the scale of the LLM's own input tokens.

The backbone pass is the expensive part (the full SmolLM2-135M over ml-100k's 1,682 titles), so
its result is cached on disk in `$KARMA_CACHE/item_text/<key>.safetensors` (default
`~/.cache/karma`), next to the converted backbones. The key hashes everything the result depends
on: the backbone's weights, the token-id matrix (tokenizer, texts, truncation), the depth, the
readout and a format version; any change makes a new key, so a stale entry is never read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from karma.errors import ConfigError
from karma.model.backbone import decoder_layers, karma_cache_dir
from karma.model.config import EncoderConfig

log = logging.getLogger(__name__)

CACHE_DIR = "item_text"
CACHE_KEY = "item_text_states"
CACHE_VERSION = 1
PASS_BATCH = 64  # items per backbone forward pass


def tokenize(
    tokenizer: PreTrainedTokenizerBase, texts: list[str], max_tokens: int
) -> list[list[int]]:
    """Token ids of each text, no special tokens, truncated to `max_tokens`."""
    encoded = tokenizer(texts, add_special_tokens=False, truncation=True, max_length=max_tokens)
    return [list(ids) for ids in encoded["input_ids"]]


FIELD_SEP = " | "


def compose_item_texts(
    tokenizer: PreTrainedTokenizerBase, fields: dict[str, list[str]], budgets: dict[str, int]
) -> list[str]:
    """Item texts from per-field token budgets: each field in `budgets` order is cut to its own
    number of tokens (decoded back to text), empty fields are skipped, the rest joined by " | ".

    A long description then cannot crowd out the title and categories, as one cut over the joined
    text would."""
    missing = [name for name in budgets if name not in fields]
    if missing:
        raise ConfigError(
            f"model.encoder.item_text_fields: the dataset has no field {missing[0]!r}; "
            f"it has {', '.join(fields)}"
        )
    cut: list[list[str]] = []
    for name, budget in budgets.items():
        values = [v.strip() for v in fields[name]]
        rows = tokenize(tokenizer, values, budget)
        decoded = tokenizer.batch_decode(rows, skip_special_tokens=True)
        cut.append([d.strip() if v else "" for v, d in zip(values, decoded)])
    return [FIELD_SEP.join(part for part in parts if part) for parts in zip(*cut)]


def item_text_matrix(
    tokenizer: PreTrainedTokenizerBase, texts: list[str], max_tokens: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (N, L) int64 token ids and (N, L) float mask of the truncated item texts."""
    rows = tokenize(tokenizer, texts, max_tokens)
    width = max(1, max((len(r) for r in rows), default=1))
    ids = torch.zeros(len(rows), width, dtype=torch.int64)
    mask = torch.zeros(len(rows), width, dtype=torch.float32)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.int64)
        mask[i, : len(row)] = 1.0
    return ids, mask


def pool_input_embeddings(
    table: nn.Embedding, ids: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """(N, L) ids and mask -> (N, d) float32 mean input embedding over each row's tokens."""
    emb = table(ids).float()  # (N, L, d)
    return (emb * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)


@contextmanager
def first_layers(model: PreTrainedModel, num_layers: int) -> Iterator[None]:
    """Temporarily run only the first `num_layers` decoder layers (the final norm is kept)."""
    decoder = model.get_decoder()
    layers = decoder_layers(model)
    config = model.config
    saved = (layers, config.num_hidden_layers, getattr(config, "layer_types", None))
    decoder.layers = nn.ModuleList(list(layers)[:num_layers])
    config.num_hidden_layers = num_layers
    if saved[2] is not None:
        config.layer_types = list(saved[2])[:num_layers]
    try:
        yield
    finally:
        decoder.layers = saved[0]
        config.num_hidden_layers = saved[1]
        if saved[2] is not None:
            config.layer_types = saved[2]


def resolve_layers(model: PreTrainedModel, item_text_layers: int | None) -> int:
    """The depth of the item-text pass: `item_text_layers`, or every layer for None."""
    total = len(decoder_layers(model))
    if item_text_layers is None:
        return total
    if item_text_layers > total:
        raise ConfigError(
            f"model.encoder.item_text_layers: {item_text_layers}, but the backbone has {total} layers"
        )
    return item_text_layers


def backbone_pass(
    model: PreTrainedModel,
    ids: torch.Tensor,
    mask: torch.Tensor,
    num_layers: int,
    readout: str,
    batch_size: int = PASS_BATCH,
    progress: bool = True,
) -> torch.Tensor:
    """(N, L) ids and mask -> (N, d) float32 pooled hidden states after `num_layers` layers.

    Rows without tokens (empty text) stay zero. Runs under `inference_mode` in eval mode and leaves
    the model's training flag and the global RNG as it found them.
    """
    decoder = model.get_decoder()
    out = torch.zeros(len(ids), int(model.config.hidden_size), dtype=torch.float32)
    present = torch.nonzero(mask.sum(1) > 0).flatten()
    was_training = model.training
    model.eval()
    device = model.get_input_embeddings().weight.device
    try:
        with (
            torch.inference_mode(),
            torch.random.fork_rng(devices=[]),
            first_layers(model, num_layers),
        ):
            for chunk in tqdm(
                present.split(batch_size),
                desc="item text (backbone)",
                unit="batch",
                disable=not progress,
            ):
                chunk_mask = mask[chunk].to(device)  # (k, L)
                hidden = decoder(
                    input_ids=ids[chunk].to(device), attention_mask=chunk_mask.long()
                ).last_hidden_state.float()  # (k, L, d)
                if readout == "mean":
                    pooled = (hidden * chunk_mask[..., None]).sum(1) / chunk_mask.sum(
                        1, keepdim=True
                    )
                else:
                    last = chunk_mask.sum(1).long() - 1  # (k,)
                    pooled = hidden[torch.arange(len(chunk), device=device), last]
                out[chunk] = pooled.cpu()
    finally:
        model.train(was_training)
    return out


def weights_fingerprint(model: PreTrainedModel) -> str:
    """Hash of every parameter and buffer of the decoder (names, dtypes, shapes and values)."""
    digest = hashlib.sha1()  # a cache key, not a signature: sha1 is the fastest here (SHA-NI)
    for name, tensor in sorted(model.get_decoder().state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        if t.dtype in (torch.bfloat16, torch.float16):
            t = t.view(torch.int16)
        if t.numel():
            digest.update(memoryview(t.numpy()).cast("B"))  # no copy
    return digest.hexdigest()


def cache_key(
    model: PreTrainedModel, ids: torch.Tensor, mask: torch.Tensor, num_layers: int, readout: str
) -> str:
    """Content key of a backbone item-text pass (see the module docstring)."""
    digest = hashlib.sha256()
    spec = {"version": CACHE_VERSION, "layers": num_layers, "readout": readout}
    digest.update(json.dumps(spec, sort_keys=True).encode())
    digest.update(weights_fingerprint(model).encode())
    digest.update(str(tuple(ids.shape)).encode())
    digest.update(ids.contiguous().numpy().tobytes())
    digest.update(mask.contiguous().numpy().tobytes())
    return digest.hexdigest()[:32]


def backbone_item_states(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    item_texts: list[str],
    config: EncoderConfig,
    progress: bool = True,
) -> torch.Tensor:
    """(N, d) float32 item-text states of the frozen `model`, from the disk cache when present.

    Call it on the untruncated, untuned backbone (see `karma.model.encoder.encoder_from_config`).
    """
    ids, mask = item_text_matrix(tokenizer, item_texts, config.item_text_tokens)
    layers = resolve_layers(model, config.item_text_layers)
    key = cache_key(model, ids, mask, layers, config.item_text_readout)
    path = karma_cache_dir() / CACHE_DIR / f"{key}.safetensors"
    if path.is_file():
        states = load_file(str(path))[CACHE_KEY]
        if tuple(states.shape) == (len(item_texts), int(model.config.hidden_size)):
            log.info("item text states from cache %s", path)
            return states
    log.info("reading %d item texts with %d backbone layers (once per catalog)", len(ids), layers)
    states = backbone_pass(model, ids, mask, layers, config.item_text_readout, progress=progress)
    with torch.no_grad():
        reference = (
            pool_input_embeddings(model.get_input_embeddings(), ids, mask).norm(dim=1).mean()
        )
        scale = reference / states.norm(dim=1).mean().clamp(min=1e-12)
    states = (states * scale).contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{key}-", suffix=".safetensors", dir=path.parent)
    os.close(handle)
    try:
        save_file({CACHE_KEY: states}, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return states
