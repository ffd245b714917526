"""`python -m lm1b.summary experiment=<name> [overrides]`: a model's parameter counts as JSON.

The model is built on the meta device, so even the 1.78B-parameter paper-size BIGLSTM is
counted in milliseconds without allocating its weights.
"""

from __future__ import annotations

import json
import sys

import torch
from hydra.errors import HydraException

from lm1b.config import ConfigError, TrainConfig, compose_config
from lm1b.models.counts import count_parameters
from lm1b.models.language_model import build_language_model
from lm1b.tokenizer import resolve_vocab_size
from lm1b.vocab import VocabularyError


def summarize(cfg: TrainConfig) -> dict:
    """The experiment's model fields and parameter counts."""
    vocab_size = resolve_vocab_size(cfg)
    with torch.device("meta"):
        model = build_language_model(cfg.model, vocab_size=vocab_size)
    m = cfg.model
    fields = {
        "type": m.type,
        "num_layers": m.num_layers,
        "state_size": m.state_size,
        "projection_size": m.projection_size,
        "vocab_size": vocab_size,
        "num_sampled": m.num_sampled,
    }
    if m.type == "flstm":
        fields["factor_rank"] = m.factor_rank
    if m.type == "glstm":
        fields["num_groups"] = m.groups_per_layer()
    return {"experiment": cfg.name, "model": fields, "parameters": count_parameters(model)}


def main(argv: list[str] | None = None) -> None:
    overrides = sys.argv[1:] if argv is None else argv
    try:
        report = summarize(compose_config(overrides))
    except (ConfigError, HydraException, VocabularyError, FileNotFoundError) as error:
        sys.exit(f"lm1b.summary: {error}")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
