"""`python -m lm1b.evaluate checkpoint=PATH [data.root=DIR] [data.test_files=GLOB]`: perplexity.

Loads a checkpoint (a file, or a run directory meaning its newest valid checkpoint; written by
any number of ranks), evaluates the full-softmax perplexity of its model (EMA weights by
default) on `data.test_files` (default: the standard test shard under the checkpoint's
`data.root`), token-weighted with the LSTM state carried across windows, prints one summary
line and writes `eval.json` atomically into the run directory (`hydra.run.dir` when given,
else outputs/evaluate/<run id>). The numbers are a function of the checkpoint, the text and
`num_streams` only: `batch_size` and `tokens_per_pass` change the speed, not the result (beyond
float rounding). On CUDA, `tf32` (default true) lets fp32 matmuls use TF32 tensor cores;
eval.json records the setting in force (null on a CPU) and the device.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import replace
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from lm1b.atomic_files import write_json_atomically
from lm1b.commands.run_directory import register_resolvers
from lm1b.config import CONFIG_DIR, ConfigError
from lm1b.config.data import DataConfig
from lm1b.config.evaluate import (
    EVAL_FILE,
    STANDARD_TEST_FILES,
    EvaluateConfig,
    register_evaluate_config,
    validate_evaluate_config,
)
from lm1b.data.build import build_eval_stream
from lm1b.data.files import resolve_files
from lm1b.evaluation import EvalTotals, evaluate_stream
from lm1b.inference import TrainedModel, load_trained_model
from lm1b.training.checkpoint import CheckpointError
from lm1b.training.precision import set_tf32

logger = logging.getLogger("lm1b.evaluate")


def read_config(dict_cfg: DictConfig) -> EvaluateConfig:
    """The validated EvaluateConfig of a composed config; ConfigError when checkpoint is unset."""
    if OmegaConf.is_missing(dict_cfg, "checkpoint"):
        raise ConfigError(
            "checkpoint is required: pass checkpoint=PATH (a checkpoint file or a run directory)"
        )
    return validate_evaluate_config(OmegaConf.to_object(dict_cfg))


def evaluation_data(cfg: EvaluateConfig, trained: TrainedModel) -> DataConfig:
    """The checkpoint's data config (window length, line limit, ...) with this evaluation's
    root, test files and number of streams."""
    data = trained.config.data
    return replace(
        data,
        root=cfg.data.root or data.root,
        test_files=cfg.data.test_files or STANDARD_TEST_FILES,
        eval_batch_size=cfg.num_streams or data.eval_batch_size,
    )


def evaluate_checkpoint(cfg: EvaluateConfig) -> dict:
    """Load, evaluate and return the report that goes into eval.json."""
    trained = load_trained_model(cfg.checkpoint, use_ema=cfg.use_ema, device=cfg.device)
    tf32 = set_tf32(trained.device, cfg.tf32)
    data = evaluation_data(cfg, trained)
    files = resolve_files(data.test_files, data.root, "data.test_files")
    logger.info("evaluating %d file(s) in %d streams", len(files), data.eval_batch_size)
    stream = build_eval_stream(data, files, trained.tokenizer)
    totals = evaluate_stream(
        trained.model,
        stream,
        rows_per_step=cfg.batch_size,
        tokens_per_pass=cfg.tokens_per_pass,
        progress_bar=cfg.progress_bar,
    )
    return build_report(trained, data, files, totals, cfg, tf32)


def build_report(
    trained: TrainedModel,
    data: DataConfig,
    files: list[Path],
    totals: EvalTotals,
    cfg: EvaluateConfig,
    tf32: bool | None,
) -> dict:
    """eval.json's content: the totals, then what produced them."""
    report = {
        "perplexity": totals.perplexity,  # per predicted token (docs/models.md's convention)
        "nll": totals.nll,
        "num_tokens": totals.num_tokens,
        "num_words": totals.num_words,
        "num_sentences": totals.num_sentences,
        "num_unk": totals.num_unk,
        "words_per_sec": totals.words_per_sec,
        "seconds": totals.seconds,
    }
    if totals.num_words != totals.num_tokens:  # a subword tokenizer
        report["perplexity_per_word"] = totals.perplexity_per_word
    return {
        **report,
        "checkpoint": str(trained.checkpoint.resolve()),
        "step": trained.step,
        "weights": "ema" if trained.ema else "raw",
        "experiment": trained.config.name,
        "model_type": trained.config.model.type,
        "vocab_size": trained.tokenizer.vocab_size,
        "files": [str(path) for path in files],
        "num_streams": data.eval_batch_size,
        "batch_size": cfg.batch_size or data.eval_batch_size,
        "tokens_per_pass": cfg.tokens_per_pass,
        "num_steps": data.num_steps,
        "device": str(trained.device),
        "tf32": tf32,  # in force on the device; None (null) on a CPU, where it does not exist
    }


def summary_line(report: dict) -> str:
    """The one line the command prints."""
    num_files = len(report["files"])
    return (
        f"perplexity {report['perplexity']:.2f} | {report['num_tokens']:,} tokens, "
        f"{report['num_sentences']:,} sentences in {num_files} file{'s' * (num_files != 1)} | "
        f"{report['words_per_sec']:,.0f} words/s | step {report['step']} "
        f"({report['weights']} weights)"
    )


def _evaluate(dict_cfg: DictConfig) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    report = evaluate_checkpoint(read_config(dict_cfg))
    write_json_atomically(report, run_dir / EVAL_FILE)
    logger.info("wrote %s", run_dir / EVAL_FILE)
    print(summary_line(report))


@hydra.main(config_path=str(CONFIG_DIR), config_name="evaluate", version_base="1.3")
def main(dict_cfg: DictConfig) -> None:
    # ValueError covers ConfigError, VocabularyError and a test set without sentences.
    try:
        _evaluate(dict_cfg)
    except (ValueError, CheckpointError, OSError) as error:  # OSError: missing file, full disk
        logger.error("%s", error)  # in full in the log: torch.load's reasons span many lines
        sys.exit(f"lm1b.evaluate: {str(error).splitlines()[0]}")


register_evaluate_config()
register_resolvers()

if __name__ == "__main__":
    main()
