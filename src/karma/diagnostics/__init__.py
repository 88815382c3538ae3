"""karma.diagnostics: measuring semantic collapse (attention sinks, barcodes, fidelity probes).

Kept import-light (the CLI imports `karma.diagnostics.commands` for `--help`); import from the
modules:

- `attention`: `collect_readout_attention(encoder, examples)`, `readout_attention(model, ...)`,
  `eager_attention(model)`, `ReadoutAttention`, `ReadoutInputs`;
- `metrics`: `summarize(attention)`, `per_layer_markdown(summary)` and the metric functions;
- `probes`: `semantic_fidelity(E, ...)`, `category_probe`, `title_probe`, `text_alignment`;
- `plots`: `plot_attention_heatmaps`, `plot_layer_curves`, `plot_comparison`;
- `commands`: `karma diagnose RUN_DIR [--compare OTHER_RUN_DIR]`.
"""
