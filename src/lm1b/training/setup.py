"""Building a training run from its config: files, tokenizer, model, data, resume state.

Order matters for the promises the trainer makes: the data files are resolved before anything
is built (a bad glob fails in a second), the output directory is proven writable before
training, the model is initialised from the same seed on every rank, and the random streams
are restored last, so a resumed run draws exactly what the uninterrupted one would have.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import torch

from lm1b.config import ConfigError, TrainConfig
from lm1b.config.model import ModelConfig
from lm1b.data.build import build_eval_stream, build_train_loader, resolve_data_files
from lm1b.models.acceleration import enable_fast_paths
from lm1b.models.language_model import build_language_model
from lm1b.tokenizer import Tokenizer, build_tokenizer, tokenizer_from_state, tokenizer_state
from lm1b.training.checkpoint import (
    BEST_NAME,
    META_KEY,
    RESUME_ENTRIES,
    CheckpointError,
    CheckpointManager,
    find_checkpoint,
    load_checkpoint,
)
from lm1b.training.distributed import DistContext
from lm1b.training.hooks import FaultInjection
from lm1b.training.loop import Trainer
from lm1b.training.metrics import METRICS_FILE, MetricsWriter
from lm1b.training.precision import resolve_precision, set_tf32

logger = logging.getLogger(__name__)


def refuse_a_used_run_directory(run_dir: Path, checkpoints: CheckpointManager) -> None:
    """`trainer.resume=never` starts afresh: in a directory that already holds a run, its
    checkpoints would interleave with the old run's (a later resume would pick the old newest)
    and its metrics.jsonl would be rewritten. Refuse, saying what to do instead."""
    metrics = run_dir / METRICS_FILE
    held = [p.name for p in checkpoints.paths()] + (
        [METRICS_FILE] if metrics.is_file() and metrics.stat().st_size else []
    )
    if (checkpoints.directory / BEST_NAME).is_file():
        held.append(BEST_NAME)
    if held:
        raise ConfigError(
            f"trainer.resume=never but {run_dir} already holds a run ({', '.join(held[:3])}"
            f"{', ...' if len(held) > 3 else ''}): pass a new hydra.run.dir, continue it with "
            "trainer.resume=auto, or move the old run away first"
        )


# Config fields a resumed run may change: how long it runs, how it logs, validates and saves,
# where it finds the (same) data, and the machine it runs on. Everything else (the model, the
# optimizer and its lr, the data and its batching, the seed) must be what the checkpoint
# trained with: a changed value would be silently overridden by the restored state, or would
# make the resumed run a different experiment under the old one's name.
_CHANGEABLE_ON_RESUME = (
    "trainer.",
    "logger.",
    "testing.",
    "data.root",
    "data.num_workers",
    "data.eval_batch_size",
)


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def refuse_changed_fields(saved: dict, current: dict) -> None:
    """Raise ConfigError listing every field (present in both configs, so that fields added
    since the checkpoint was written pass) whose value differs and may not change."""
    old, new = _flatten(saved), _flatten(current)
    changed = [
        f"{key}: {old[key]!r} in the checkpoint, {new[key]!r} now"
        for key in sorted(old.keys() & new.keys())
        if old[key] != new[key] and not key.startswith(_CHANGEABLE_ON_RESUME)
    ]
    if changed:
        raise ConfigError(
            "the run resumes from a checkpoint trained with other settings ("
            + "; ".join(changed)
            + "): resume with the checkpoint's values, or start a new run in another "
            "hydra.run.dir (trainer.init_from=<this run> keeps the weights)"
        )


def find_resume_checkpoint(cfg: TrainConfig, ctx: DistContext, checkpoints: CheckpointManager):
    """The checkpoint to resume from (every rank loads the file rank 0 chose), or None.

    `trainer.resume=auto` skips, with a warning, a newest file that cannot be resumed from (one
    damaged, or lacking an entry of RESUME_ENTRIES) and takes the previous one; a file named
    in `trainer.resume` is refused instead, in one line naming the entry.
    """
    resume = cfg.trainer.resume
    found = None  # rank 0's choice and its state: finding a valid file means loading it
    if ctx.is_main and resume == "auto":
        found = checkpoints.latest(RESUME_ENTRIES)
        if found is None and checkpoints.paths():
            # Starting afresh would let retention delete files someone may want to recover.
            raise CheckpointError(
                f"{checkpoints.directory} holds checkpoints but none is valid; move them away "
                "or pass trainer.resume=never"
            )
    elif ctx.is_main and resume != "never":
        found = find_checkpoint(resume, entries=RESUME_ENTRIES)
    path = ctx.broadcast_object(None if found is None else str(found[0]))
    if path is None:
        return None
    logger.info("resuming from %s", path)
    return found[1] if found is not None else load_checkpoint(path, RESUME_ENTRIES)


# Model fields that fix the shapes of the weights: an init_from checkpoint must agree on them.
_SHAPE_FIELDS = ("type", "num_layers", "state_size", "projection_size")


def _shape_fields(model: ModelConfig) -> dict:
    """The shape-defining model fields, with the variant's own (rank, groups per layer)."""
    fields = {name: getattr(model, name) for name in _SHAPE_FIELDS}
    if model.type == "flstm":
        fields["factor_rank"] = model.factor_rank
    if model.type == "glstm":
        fields["num_groups"] = model.groups_per_layer()
    return fields


def load_init_checkpoint(cfg: TrainConfig) -> dict | None:
    """The checkpoint named by `trainer.init_from` (its model weights and tokenizer start a
    fresh run), or None. Raises ConfigError when its model is not the one configured."""
    if cfg.trainer.init_from is None:
        return None
    path, state = find_checkpoint(cfg.trainer.init_from, prefer_best=True)
    theirs = _shape_fields(ModelConfig(**state["config"]["model"]))
    ours = _shape_fields(cfg.model)
    if theirs != ours:
        overrides = " ".join(f"model.{k}={str(v).replace(' ', '')}" for k, v in theirs.items())
        raise ConfigError(
            f"trainer.init_from={cfg.trainer.init_from} holds a model with {theirs}, but this "
            f"run configures {ours}; pass the checkpoint's model fields ({overrides})"
        )
    logger.info("initialising the model and tokenizer from %s", path)
    return state


def _tokenizer(cfg: TrainConfig, ctx: DistContext, train_files, run_dir: Path, checkpoint):
    """From the checkpoint when resuming; otherwise built (or loaded) on rank 0 first."""
    if checkpoint is not None:
        return tokenizer_from_state(checkpoint["tokenizer"])
    tokenizer = None
    if ctx.is_main:
        tokenizer = build_tokenizer(cfg.data, train_files, cache_dir=run_dir)
    ctx.barrier()
    return tokenizer or build_tokenizer(cfg.data, train_files, cache_dir=run_dir)


def _build_model(cfg: TrainConfig, ctx: DistContext, tokenizer: Tokenizer, checkpoint):
    if cfg.model.num_sampled >= tokenizer.vocab_size:
        raise ConfigError(
            f"model.num_sampled={cfg.model.num_sampled} is invalid: it must be below the "
            f"vocabulary size {tokenizer.vocab_size} of this run's data"
        )
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    model = build_language_model(cfg.model, vocab_size=tokenizer.vocab_size).to(ctx.device)
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
    fast = enable_fast_paths(model, cfg.trainer, ctx.device)
    logger.info("GPU fast paths: %s", ", ".join(f"{k}={v}" for k, v in fast.items()))
    return model


def _numerics(cfg: TrainConfig, device: torch.device) -> dict:
    """Resolve trainer.precision for this model and device (a combination it refuses raises
    ConfigError before anything is built) and set TF32; what is in force, for the record."""
    precision = resolve_precision(cfg.trainer.precision, cfg.model.type, device)
    tf32 = set_tf32(device, cfg.trainer.tf32)
    logger.info(
        "precision %s (trainer.precision=%s), TF32 %s",
        precision,
        cfg.trainer.precision,
        "n/a on a CPU" if tf32 is None else tf32,
    )
    return {"precision": precision, "tf32": tf32}


def _checkpoints_and_resume_state(
    cfg: TrainConfig, ctx: DistContext, run_dir: Path, config_container: dict
) -> tuple[CheckpointManager, dict | None]:
    """The run's checkpoint manager and the checkpoint it resumes from (None: a fresh run),
    after the checks that keep two runs from mixing in one directory."""
    checkpoints = CheckpointManager(run_dir / "checkpoints", cfg.trainer.keep_last)
    if ctx.is_main:
        checkpoints.check_writable()
        if cfg.trainer.resume == "never":
            refuse_a_used_run_directory(run_dir, checkpoints)
    checkpoint = find_resume_checkpoint(cfg, ctx, checkpoints)
    if checkpoint is not None:
        refuse_changed_fields(checkpoint["config"], config_container)
    # The run id is drawn when the run starts and read back from its checkpoint on resume.
    checkpoints.run_id = (checkpoint or {}).get(META_KEY, {}).get("run_id") or uuid.uuid4().hex
    return checkpoints, checkpoint


def build_trainer(
    cfg: TrainConfig, ctx: DistContext, run_dir: Path, config_container: dict, config_yaml: str
) -> Trainer:
    """Everything a run needs, restored from the newest checkpoint when there is one."""
    numerics = _numerics(cfg, ctx.device)
    files = resolve_data_files(cfg.data)
    # Opt out explicitly of invariant checks on the sparse gradients (torch warns otherwise
    # whenever its sparse optimizers build one); ours are built from valid ids and rows.
    torch.sparse.check_sparse_tensor_invariants.disable()
    checkpoints, checkpoint = _checkpoints_and_resume_state(cfg, ctx, run_dir, config_container)
    # A fresh run may start from another checkpoint's weights and tokenizer (trainer.init_from).
    init = load_init_checkpoint(cfg) if checkpoint is None else None
    tokenizer = _tokenizer(cfg, ctx, files["train"], run_dir, checkpoint or init)
    model = _build_model(cfg, ctx, tokenizer, checkpoint or init)
    loader = build_train_loader(
        cfg.data,
        files["train"],
        tokenizer,
        seed=cfg.seed,
        rank=ctx.rank,
        world_size=ctx.world_size,
        pin_memory=ctx.device.type == "cuda",
    )
    valid = None
    if "valid" in files and cfg.trainer.val_every:
        valid = build_eval_stream(
            cfg.data, files["valid"], tokenizer, rank=ctx.rank, world_size=ctx.world_size
        )
    resume_step = 0 if checkpoint is None else checkpoint["counters"]["step"]
    metrics = None
    if ctx.is_main:
        metrics = MetricsWriter(
            run_dir, tensorboard=cfg.logger.tensorboard, resume_step=resume_step
        )
        if resume_step == 0:
            metrics.write_hparams(_hparams(cfg, model, numerics), config_yaml)
    static_state = {"config": config_container, "tokenizer": tokenizer_state(tokenizer)}
    hooks = FaultInjection.from_config(cfg.testing, ctx.rank)
    trainer = Trainer(cfg, ctx, model, loader, valid, checkpoints, metrics, static_state, hooks)
    if checkpoint is not None:
        trainer.load_state_dict(checkpoint)
        _carry_state_in_this_runs_dtypes(trainer)
    else:
        torch.manual_seed(cfg.seed + 7919 * ctx.rank)  # dropout streams differ between ranks
    return trainer


def _carry_state_in_this_runs_dtypes(trainer: Trainer) -> None:
    """Cast the LSTM state restored from a checkpoint to the dtypes this run carries, keeping
    its values: trainer.precision may change on resume, and a bf16 state in an fp32 run fails
    in its first matmul (an fp32 one in a bf16 run would differ from every later window's)."""
    saved = trainer.steps.lstm_state
    if saved is None:
        return
    dtypes = _carried_state_dtypes(trainer, rows=saved[0].shape[1])
    trainer.steps.lstm_state = tuple(s.to(d) for s, d in zip(saved, dtypes, strict=True))


def _carried_state_dtypes(trainer: Trainer, rows: int) -> tuple[torch.dtype, ...]:
    """The dtypes of the (h, c) state the LSTM stack returns under the step's autocast, read
    from one time step of zeros rather than from trainer.precision: a stack may keep h and c
    in different dtypes (nn.LSTM under CPU autocast returns h in bf16 and c in fp32). Eval mode
    without gradients: no dropout draws from the restored RNG, no CUDA graph is captured."""
    stack = trainer.model.rnn
    # fp32, as the embedding's output (the master weights are fp32 under either precision).
    zeros = torch.zeros(1, rows, trainer.cfg.model.projection_size, device=trainer.ctx.device)
    was_training = stack.training
    stack.eval()
    try:
        with torch.no_grad(), trainer.steps.autocast():
            _, state = stack(zeros)
    finally:
        stack.train(was_training)
    return tuple(s.dtype for s in state)


def _hparams(cfg: TrainConfig, model, numerics: dict) -> dict:
    m = cfg.model
    return {
        "trainer/precision": numerics["precision"],
        "trainer/tf32": str(numerics["tf32"]),  # None (a CPU) is not a valid hparam value
        "experiment": cfg.name,
        "model/type": m.type,
        "model/state_size": m.state_size,
        "model/projection_size": m.projection_size,
        "model/factor_rank": m.factor_rank or 0,
        "model/num_groups": str(m.groups_per_layer()),
        "model/num_sampled": m.num_sampled,
        "model/rnn_parameters": sum(p.numel() for p in model.rnn.parameters()),
        "data/batch_size": cfg.data.batch_size,
        "data/num_steps": cfg.data.num_steps,
        "optim/name": cfg.optim.name,
        "optim/lr": cfg.optim.lr,
        "seed": cfg.seed,
    }
