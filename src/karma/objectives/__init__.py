"""karma.objectives: every training loss, one contract (`base.LossOutput`).

- `karma.objectives.action`: the action objective (sampled softmax, kept at inference);
- `karma.objectives.generation`: L_gen, target text generated after the history prefix;
- `karma.objectives.reconstruction`: L_rec, target text decoded from g(e_u) alone, and the
  warm-up loss (an item's own text from its continuous token);
- `karma.objectives.flow`: L_flow, frozen features from e_u by conditional rectified flow (or MSE);
- `karma.objectives.knowledge`: `KnowledgeConfig`, `build_knowledge_objectives`, `KnowledgeBatch`;
- `karma.objectives.lm_head`: teacher-forced target NLL with the LM head only on labelled positions.

Submodules are imported explicitly (they pull in torch and transformers).
"""
