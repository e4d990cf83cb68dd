"""One device resolver for every command: `auto`, `cpu`, `cuda` or `cuda:N`.

`check_device` validates the spelling without importing torch (so a typo costs milliseconds);
`resolve_device` also checks that the device exists and returns a `torch.device`.
"""

from __future__ import annotations

import re
from contextlib import contextmanager

from featstore.errors import SerError

DEVICE_HELP = "auto (a CUDA GPU when torch sees one, else cpu), cpu, cuda or cuda:N"
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


class DeviceError(SerError, ValueError):
    """A device that is misspelt or not present on this machine."""


def check_device(spec: str | None) -> str:
    """The device spelling, validated (None means auto); no torch import."""
    spec = "auto" if spec is None else str(spec).strip().lower()
    if not _DEVICE.fullmatch(spec):
        raise DeviceError(f"unknown device {spec!r}: use {DEVICE_HELP}")
    return spec


def resolve_device(spec=None):
    """`torch.device` for a spec; DeviceError when CUDA is asked for but torch sees none."""
    import torch

    if isinstance(spec, torch.device):
        spec = str(spec)
    spec = check_device(spec)
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"device {spec} asked for (--device, or `device` in the config file), but torch "
                              f"sees no CUDA GPU on this machine; use --device cpu or auto")
        index = int(spec.split(":")[1]) if ":" in spec else 0
        if index >= torch.cuda.device_count():
            raise DeviceError(f"--device {spec}: torch sees {torch.cuda.device_count()} CUDA GPU(s) "
                              f"(cuda:0 .. cuda:{torch.cuda.device_count() - 1})")
    return torch.device(spec)


@contextmanager
def full_float32(device, enabled: bool = True):
    """cuDNN and cuBLAS in true float32 on CUDA while the block runs (no TF32), then as they were.

    torch lets cuDNN convolutions use TF32 by default: an H200 then gave a clip's features 3e-3 apart
    batched and alone (2e-5 without TF32), so a float32 store would depend on its batches. Half
    precision (--dtype float16/bfloat16) is the fast path; float32 is the exact one.
    """
    import torch

    if not enabled or torch.device(device).type != "cuda":
        yield
        return
    conv, matmul = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = conv, matmul
