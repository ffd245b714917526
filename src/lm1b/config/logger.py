"""Logger config group (configs/logger/*.yaml): TensorBoard and progress bars (rank 0 only)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LoggerConfig:
    tensorboard: bool = True
    progress_bar: bool = True
