"""The numeric precision a run trains, evaluates or benchmarks in, and TF32 on CUDA.

`trainer.precision`:
- `auto` (the default): bf16 autocast on a GPU with native bf16, fp32 everywhere else (a CPU,
  an older GPU, and the cuDNN baseline, see below);
- `bf16`: bf16 autocast wherever asked, the CPU included (CPU autocast: what the tests use);
- `fp32`: no autocast.

The cuDNN baseline (`model.type=biglstm_cudnn`) refuses bf16 on CUDA: PyTorch's autocast runs
cuDNN's RNN kernels in float16 whatever the autocast dtype (ATen's AutocastRNN casts to half),
and nothing here scales the loss for fp16, so small gradients would underflow. It trains in fp32
there, with TF32 matmuls.

`trainer.tf32` (default true): fp32 matmuls and cuDNN RNN/convolutions on CUDA use TF32 tensor
cores (PyTorch leaves cuBLAS matmuls in full fp32 by default while cuDNN's RNNs use TF32, so an
fp32 comparison with the cuDNN baseline would otherwise be tilted). It has no effect on a CPU.
"""

from __future__ import annotations

import torch

from lm1b.config import ConfigError

CUDNN_MODEL = "biglstm_cudnn"


def resolve_precision(requested: str, model_type: str, device: torch.device) -> str:
    """The precision (`bf16` or `fp32`) that `requested` (`auto`, `bf16`, `fp32`) means for
    `model_type` on `device`; ConfigError for bf16 with the cuDNN baseline on CUDA."""
    cuda = device.type == "cuda"
    if requested == "auto":
        bf16_capable = cuda and has_native_bf16(device)
        return "bf16" if bf16_capable and model_type != CUDNN_MODEL else "fp32"
    if requested == "bf16" and cuda and model_type == CUDNN_MODEL:
        raise ConfigError(
            f"trainer.precision='bf16' is invalid with model.type={CUDNN_MODEL!r} on CUDA: "
            "autocast runs cuDNN's LSTM in float16 without loss scaling; use 'auto' or 'fp32' "
            "(TF32), or model.type='biglstm' in bf16"
        )
    return requested


def has_native_bf16(device: torch.device) -> bool:
    """Whether CUDA device `device` computes in bf16 natively: compute capability 8.0
    (Ampere) or newer. Not `torch.cuda.is_bf16_supported()`, which by default also says yes
    on older GPUs that merely emulate bf16, slower than fp32, and asks about the current
    device rather than this one."""
    return torch.cuda.get_device_capability(device) >= (8, 0)


def set_tf32(device: torch.device, enabled: bool) -> bool | None:
    """Let CUDA's fp32 matmuls and cuDNN use TF32 (or not); returns the setting now in force,
    None on a CPU (TF32 does not exist there and nothing is changed)."""
    if device.type != "cuda":
        return None
    mode = "tf32" if enabled else "ieee"
    if _has_fp32_precision_api():
        # torch >= 2.9: the legacy allow_tf32 flags must not be mixed with these (reading
        # them after a new-API write raises), so only the new ones are touched.
        torch.backends.cuda.matmul.fp32_precision = mode
        torch.backends.cudnn.rnn.fp32_precision = mode
        torch.backends.cudnn.conv.fp32_precision = mode
    else:
        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled
    return tf32_enabled()


def tf32_enabled() -> bool:
    """Whether CUDA fp32 matmuls may use TF32 now."""
    if _has_fp32_precision_api():
        return torch.backends.cuda.matmul.fp32_precision == "tf32"
    return bool(torch.backends.cuda.matmul.allow_tf32)


def _has_fp32_precision_api() -> bool:
    try:
        return isinstance(torch.backends.cuda.matmul.fp32_precision, str)
    except (AttributeError, RuntimeError):
        return False
