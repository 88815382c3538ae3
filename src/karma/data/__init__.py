"""karma.data: source adapters -> the canonical prepared dataset (`schema.py`) and its reader.

- `prepare.prepare_dataset(source, out, config, mapping, meta)`: `karma data prepare`;
  adapters in `atomic.py` (RecBole atomic files, built-in ml-100k / ml-1m), `mapped.py` (any table
  through a `ColumnMapping`), `amazon.py` (Amazon Reviews 2023); shared steps in `preprocess.py`
  (options: `config.PrepareConfig`) and `queries.py` (synthetic queries);
- `dataset.PreparedDataset`: what training, evaluation and serving read;
- `stats.py`: `karma data stats`; `features.py`: `karma data features`.

Nothing is imported here so that `karma --help` stays quick.
"""
