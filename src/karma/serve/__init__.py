"""karma.serve: export (train-only heads stripped), FAISS item index, HTTP service, `karma recommend`.

Public API (imported lazily, so `karma --help` does not load torch or faiss):

- `write_artifact(encoder, items, item_texts, out, provenance)` / `export_run(run_dir, out)`;
- `load_artifact(dir, index="flat") -> ServingModel` with `encode`, `search`, `add_items`;
- `InterestEncoder`, the protocol a model implements to be exported and served;
- `IndexConfig`, `build_index`, `evaluate_index`;
- `create_app(model, ServeConfig)`, the FastAPI app; `MicroBatcher`.
"""

from __future__ import annotations

from karma.lazy import lazy_exports

_EXPORTS = {
    "write_artifact": "karma.serve.export",
    "export_run": "karma.serve.export",
    "load_artifact": "karma.serve.artifact",
    "save_catalog": "karma.serve.artifact",
    "ServingModel": "karma.serve.artifact",
    "Recommendations": "karma.serve.artifact",
    "UnknownItemsError": "karma.serve.lookup",
    "AmbiguousItemsError": "karma.serve.lookup",
    "ItemLookup": "karma.serve.lookup",
    "InterestEncoder": "karma.serve.protocol",
    "register_encoder": "karma.serve.protocol",
    "IndexConfig": "karma.serve.index",
    "build_index": "karma.serve.index",
    "evaluate_index": "karma.serve.index",
    "create_app": "karma.serve.app",
    "ServeConfig": "karma.serve.app",
    "MicroBatcher": "karma.serve.batcher",
    "recommend": "karma.serve.recommend",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
