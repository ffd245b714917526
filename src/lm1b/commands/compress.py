"""`python -m lm1b.compress checkpoint=PATH output_dir=DIR ranks=[r, ...] groups=[k, ...]
[finetune_steps=N] [split=valid]`: a trained BIGLSTM made into F-LSTMs and G-LSTMs.

For each rank r the gate matrix of every layer is replaced by its best rank-r factors
(truncated SVD: F-LSTM); for each k (an int, or one per layer like [2,4]) by its block diagonal
(G-LSTM, lossy by design, as a comparison). See `lm1b.models.convert`. The weights converted are
the ones the evaluator uses: the EMA of the LSTM weights when the checkpoint has one (`use_ema`).

Each result is written to `output_dir/<name>/step-000000000.pt` as an initialisation: the
converted weights, the tokenizer, the source's config with the new `model` section, counters
at 0, no optimizer or EMA state. Fine-tune it with the trainer, which starts a fresh run from
its weights and tokenizer:

    python -m lm1b.train experiment=flstm_r512 size=... model.factor_rank=<r> \\
        trainer.init_from=<output_dir>/flstm_r<r>

or in this command with `finetune_steps=N` (the source's training config, N more steps into
`output_dir/<name>-finetune`). The perplexity of the source, of every converted model and of
every fine-tuned one is measured on the checkpoint's `data.<split>_files` with the evaluator's
function and convention (`max_batches=N`: the first N windows of every stream only), printed
as a Markdown table and written to `output_dir/compress.json`.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.errors import HydraException
from omegaconf import MISSING, OmegaConf

from lm1b.atomic_files import write_json_atomically
from lm1b.config import TrainConfig, validate_config
from lm1b.config.checks import require
from lm1b.config.compose import compose_schema
from lm1b.config.trainer import DEVICES
from lm1b.data.build import build_eval_stream
from lm1b.data.files import resolve_files
from lm1b.evaluation import evaluate_stream
from lm1b.inference import TrainedModel, load_trained_model
from lm1b.models.convert import compressed_model_config, convert_state_dict
from lm1b.tokenizer import tokenizer_state
from lm1b.training.checkpoint import CheckpointError, CheckpointManager
from lm1b.training.distributed import init_distributed
from lm1b.training.loop import Counters
from lm1b.training.setup import build_trainer

logger = logging.getLogger(__name__)

SPLITS = ("valid", "test")


@dataclass
class CompressConfig:
    """Options of `python -m lm1b.compress` (configs/compress.yaml)."""

    checkpoint: str = MISSING  # a trained BIGLSTM: checkpoint file or run directory
    output_dir: str = MISSING
    ranks: list[int] = field(default_factory=list)  # F-LSTM ranks (truncated SVD)
    groups: list[Any] = field(default_factory=list)  # G-LSTM k: ints, or per-layer lists
    split: str = "valid"  # perplexities on the checkpoint's data.<split>_files
    max_batches: int | None = None  # windows scored per stream (null: the whole split)
    finetune_steps: int = 0  # training steps after conversion (0: none)
    use_ema: bool = True  # convert the EMA weights (what the evaluator scores)
    device: str = "auto"


def validate_compress_config(cfg: CompressConfig) -> CompressConfig:
    """Check the fields; raise ConfigError naming the field and the allowed values."""
    require(cfg.device in DEVICES, "device", cfg.device, f"one of {list(DEVICES)}")
    require(cfg.split in SPLITS, "split", cfg.split, f"one of {list(SPLITS)}")
    require(bool(cfg.ranks or cfg.groups), "ranks", cfg.ranks, "set ranks=[...] or groups=[...]")
    require(cfg.max_batches is None or cfg.max_batches >= 1, "max_batches", cfg.max_batches, ">= 1")
    require(cfg.finetune_steps >= 0, "finetune_steps", cfg.finetune_steps, "0 or more")
    return cfg


def conversions(cfg: CompressConfig) -> list[tuple[str, str, Any]]:
    """(name, method, rank or groups) of every requested conversion."""
    found = [(f"flstm_r{r}", "svd", int(r)) for r in cfg.ranks]
    for k in cfg.groups:
        if isinstance(k, int):
            found.append((f"glstm_k{k}", "block", k))
        else:
            found.append(("hglstm_" + "_".join(f"k{g}" for g in k), "block", [int(g) for g in k]))
    return found


def write_compressed(trained: TrainedModel, name: str, method: str, amount, out: Path) -> Path:
    """Convert `trained` and save it as an initialisation checkpoint in `out`; return the file."""
    model_cfg = compressed_model_config(trained.config.model, method, amount)
    config = dataclasses.replace(trained.config, name=name, model=model_cfg)
    validate_config(config)  # e.g. a rank above 2p fails here, naming model.factor_rank
    state = {
        "config": OmegaConf.to_container(OmegaConf.structured(config)),
        "tokenizer": tokenizer_state(trained.tokenizer),
        "model": convert_state_dict(trained.model.state_dict(), model_cfg),
        "ema": None,
        "counters": dataclasses.asdict(Counters()),
        "compressed_from": {
            "checkpoint": str(trained.checkpoint.resolve()),
            "step": trained.step,
            "weights": "ema" if trained.ema else "raw",
            "method": method,
            "amount": amount,
        },
    }
    return CheckpointManager(out).save(state, step=0)


def perplexity(trained: TrainedModel, split: str, max_batches: int | None = None) -> float:
    """Full-softmax perplexity on the checkpoint's data.<split>_files (evaluator convention),
    at most `max_batches` windows of each stream."""
    data = trained.config.data
    files = resolve_files(getattr(data, f"{split}_files"), data.root, f"data.{split}_files")
    stream = build_eval_stream(data, files, trained.tokenizer)
    return evaluate_stream(trained.model, stream, max_batches=max_batches).perplexity


def finetune(init: Path, config: TrainConfig, steps: int, run_dir: Path, device: str) -> Path:
    """Train `steps` steps from the weights of `init` with the trainer; return the run dir."""
    trainer_cfg = dataclasses.replace(
        config.trainer,
        max_steps=steps,
        max_time=None,
        resume="never",
        init_from=str(init),
        val_every=0,
        checkpoint_every=0,
        device=device,
    )
    config = validate_config(dataclasses.replace(config, trainer=trainer_cfg))
    container = OmegaConf.to_container(OmegaConf.structured(config))
    trainer = build_trainer(config, init_distributed(device), run_dir, container, "")
    trainer.fit()
    if trainer.metrics is not None:
        trainer.metrics.close()
    return run_dir


def compress(cfg: CompressConfig) -> list[dict]:
    """Every conversion of the source, with parameter counts and perplexities."""
    source = load_trained_model(cfg.checkpoint, use_ema=cfg.use_ema, device=cfg.device)
    out = Path(cfg.output_dir)
    rows = [_row("biglstm (source)", source, perplexity(source, cfg.split, cfg.max_batches))]
    for name, method, amount in conversions(cfg):
        path = write_compressed(source, name, method, amount, out / name)
        converted = load_trained_model(path, device=cfg.device)
        row = _row(name, converted, perplexity(converted, cfg.split, cfg.max_batches), path)
        if cfg.finetune_steps:
            run_dir = finetune(
                path, converted.config, cfg.finetune_steps, out / f"{name}-finetune", cfg.device
            )
            tuned = load_trained_model(run_dir, use_ema=cfg.use_ema, device=cfg.device)
            row.update(
                finetuned_perplexity=perplexity(tuned, cfg.split, cfg.max_batches),
                finetuned=str(run_dir),
            )
        logger.info("%s: perplexity %.2f", name, row["perplexity"])
        rows.append(row)
    write_json_atomically({"split": cfg.split, "rows": rows}, out / "compress.json")
    return rows


def _row(name: str, trained: TrainedModel, ppl: float, path: Path | None = None) -> dict:
    rnn = sum(p.numel() for p in trained.model.rnn.parameters())
    return {
        "name": name,
        "rnn_params": rnn,
        "perplexity": ppl,
        "checkpoint": str(path or trained.checkpoint),
    }


def format_table(rows: list[dict], finetune_steps: int) -> str:
    """The rows as a Markdown table."""
    tuned = f" after {finetune_steps} steps" if finetune_steps else ""
    lines = [f"| model | RNN params | perplexity | fine-tuned{tuned} |", "|---|---:|---:|---:|"]
    for row in rows:
        after = row.get("finetuned_perplexity")
        lines.append(
            f"| {row['name']} | {row['rnn_params']:,} | {row['perplexity']:.2f} | "
            f"{'-' if after is None else f'{after:.2f}'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = compose_schema("compress", CompressConfig, sys.argv[1:] if argv is None else argv)
        rows = compress(validate_compress_config(cfg))
    except (ValueError, HydraException, CheckpointError, FileNotFoundError) as error:
        sys.exit(f"lm1b.compress: {error}")
    print(format_table(rows, cfg.finetune_steps))


if __name__ == "__main__":
    main()
