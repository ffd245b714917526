"""`python -m lm1b.generate checkpoint=PATH [prompt="the"] [num_samples=5] [temperature=1.0]
[top_k=0] [top_p=1.0] [seed=0]`: sample sentences from a trained model.

Each sample starts from `<S>` followed by the prompt's words (split on single spaces like the
corpus; unknown words become `<UNK>`) and draws one token at a time from the full softmax,
with logits divided by `temperature`, then restricted to the `top_k` most likely tokens (0: no
limit) and to the smallest set whose probability reaches `top_p` (1.0: no limit), until `</S>`
or `max_tokens` tokens. `<S>` itself is never drawn (it is never a training target). All
samples run as one batch; draws come from one generator seeded with `seed`, so the same
checkpoint, options, seed and device give the same sentences. On CUDA, `tf32` (default true)
lets fp32 matmuls use TF32 tensor cores: the logits, and so the samples of a seed, can differ
between tf32=true and false.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from hydra.errors import HydraException
from omegaconf import MISSING
from torch import Tensor

from lm1b.config.checks import require
from lm1b.config.compose import compose_schema
from lm1b.config.trainer import DEVICES
from lm1b.data.text import split_tokens
from lm1b.inference import TrainedModel, load_trained_model
from lm1b.training.checkpoint import CheckpointError
from lm1b.training.precision import set_tf32

logger = logging.getLogger(__name__)


@dataclass
class GenerateConfig:
    """Options of `python -m lm1b.generate` (configs/generate.yaml)."""

    checkpoint: str = MISSING  # a checkpoint file, or a run / checkpoints directory
    prompt: str = ""  # words every sample starts with (after <S>)
    num_samples: int = 5
    max_tokens: int = 50  # tokens drawn per sample at most (the sentence end included)
    temperature: float = 1.0
    top_k: int = 0  # keep the k most likely tokens (0: all)
    top_p: float = 1.0  # keep the smallest set with this much probability (1.0: all)
    seed: int = 0
    use_ema: bool = True
    device: str = "auto"
    tf32: bool = True  # CUDA only: fp32 matmuls on TF32 tensor cores (no effect on a CPU)


def validate_generate_config(cfg: GenerateConfig) -> GenerateConfig:
    """Check the fields; raise ConfigError naming the field and the allowed values."""
    require(cfg.device in DEVICES, "device", cfg.device, f"one of {list(DEVICES)}")
    require(cfg.num_samples >= 1, "num_samples", cfg.num_samples, "at least 1")
    require(cfg.max_tokens >= 1, "max_tokens", cfg.max_tokens, "at least 1")
    require(cfg.temperature > 0, "temperature", cfg.temperature, "greater than 0")
    require(cfg.top_k >= 0, "top_k", cfg.top_k, "0 (off) or more")
    require(0 < cfg.top_p <= 1, "top_p", cfg.top_p, "in (0, 1] (1.0: off)")
    return cfg


def filter_logits(logits: Tensor, top_k: int = 0, top_p: float = 1.0) -> Tensor:
    """Logits (B, V) with every token outside the top-k / top-p set of its row set to -inf.

    Top-p keeps, in order of decreasing probability, every token whose preceding tokens hold
    less than `top_p` of the probability: the smallest set reaching top_p, at least one token.
    """
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, -torch.inf)
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V)
        probs = sorted_logits.softmax(dim=-1)
        before = probs.cumsum(dim=-1) - probs  # probability of the more likely tokens
        drop = torch.zeros_like(before, dtype=torch.bool).scatter(-1, order, before >= top_p)
        logits = logits.masked_fill(drop, -torch.inf)
    return logits


def next_token_logits(trained: TrainedModel, hidden: Tensor) -> Tensor:
    """Full-softmax logits (B, V), float32, of the last hidden states (B, p)."""
    softmax = trained.model.softmax
    logits = F.linear(hidden.float(), softmax.weight.float(), softmax.bias[:, 0].float())
    logits[:, trained.tokenizer.bos_id] = -torch.inf  # <S> is never a target
    return logits


@torch.no_grad()
def sample(trained: TrainedModel, cfg: GenerateConfig) -> list[list[int]]:
    """`cfg.num_samples` token-id lists (prompt included, <S> and </S> excluded)."""
    model, tokenizer, device = trained.model.eval(), trained.tokenizer, trained.device
    prompt = tokenizer.encode(split_tokens(cfg.prompt))
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    ids = torch.tensor([tokenizer.bos_id, *prompt], device=device)
    inputs = ids.expand(cfg.num_samples, -1)  # (B, prompt + 1)
    drawn, state = [], None
    finished = torch.zeros(cfg.num_samples, dtype=torch.bool, device=device)
    for _ in range(cfg.max_tokens):
        hidden, state = model.hidden_states(inputs, state)  # (T, B, p)
        logits = filter_logits(
            next_token_logits(trained, hidden[-1]) / cfg.temperature, cfg.top_k, cfg.top_p
        )
        token = torch.multinomial(logits.softmax(dim=-1), 1, generator=generator)  # (B, 1)
        drawn.append(token[:, 0])
        finished |= token[:, 0] == tokenizer.eos_id
        if bool(finished.all()):
            break
        inputs = token  # the next step feeds only the new token; the state carries the rest
    return [_until_end(prompt, row, tokenizer.eos_id) for row in torch.stack(drawn, 1).tolist()]


def _until_end(prompt: list[int], row: list[int], eos_id: int) -> list[int]:
    """The prompt and the drawn ids of one sample, cut before its first </S>."""
    return [*prompt, *(row[: row.index(eos_id)] if eos_id in row else row)]


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = compose_schema("generate", GenerateConfig, sys.argv[1:] if argv is None else argv)
        cfg = validate_generate_config(cfg)
        trained = load_trained_model(cfg.checkpoint, use_ema=cfg.use_ema, device=cfg.device)
        set_tf32(trained.device, cfg.tf32)
        samples = sample(trained, cfg)
    except (ValueError, HydraException, CheckpointError, FileNotFoundError) as error:
        sys.exit(f"lm1b.generate: {error}")
    for ids in samples:
        print(trained.tokenizer.decode(ids))


if __name__ == "__main__":
    main()
