"""karma.model: the backbone LLM and the continuous-token encoder.

- `karma.model.config`: `BackboneConfig`, `EncoderConfig`, `ModelConfig`;
- `karma.model.backbone`: `load_backbone(config) -> (causal LM, tokenizer)` for built-in names
  (tiny, smollm2-135m, gemma3-270m), hub names, local directories and .gguf files (cached as
  safetensors under $KARMA_CACHE);
- `karma.model.sequence`: the `[instruction][query] x_1 … x_n [INTEREST]` index layout of a batch;
- `karma.model.item_text`: item texts as token inputs; the frozen backbone's item-text states
  (`item_text_pooling: backbone`), computed once per catalog and cached under $KARMA_CACHE;
- `karma.model.encoder`: `KarmaEncoder` (item tokens, LLM readout, interest and item towers) and
  `encoder_from_config` (backbone + item-text states + encoder from a `ModelConfig`).

Submodules are imported explicitly (they pull in torch and transformers).
"""
