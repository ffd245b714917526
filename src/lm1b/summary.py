"""`python -m lm1b.summary experiment=<name> [overrides]`: a model's parameter counts as JSON.

The model is built on the meta device, so even the 1.78B-parameter paper-size BIGLSTM is
counted in milliseconds without allocating its weights.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from hydra.errors import HydraException
from torch import nn

from lm1b.config import ConfigError, TrainConfig, compose_config
from lm1b.models.language_model import build_language_model
from lm1b.tokenizer import SentencePieceTokenizer
from lm1b.vocab import Vocabulary, VocabularyError


def _numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Parameters of the LSTM stack (gate weights, gate biases, projections), the embedding,
    the softmax (weight and bias) and the whole model."""
    return {
        "rnn": _numel(model.rnn),
        "embedding": _numel(model.embedding),
        "softmax": _numel(model.softmax),
        "total": _numel(model),
    }


def resolve_vocab_size(cfg: TrainConfig) -> int:
    """`model.vocab_size`, or the size of the configured vocabulary file / sentencepiece model."""
    if cfg.model.vocab_size is not None:
        return cfg.model.vocab_size
    if cfg.data.tokenizer == "sentencepiece" and cfg.data.spm_model:
        return SentencePieceTokenizer(cfg.data.spm_model).vocab_size
    path = Path(cfg.data.vocab_file or "")
    if not cfg.data.vocab_file or not path.is_file():
        raise ConfigError(
            f"model.vocab_size=None is taken from data.vocab_file={cfg.data.vocab_file!r}, which "
            "does not exist yet; set model.vocab_size=<V> or build the vocabulary first"
        )
    return len(Vocabulary.load(path))


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
