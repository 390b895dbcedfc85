"""Where the library's work happens (``ARCHITECTURE.md``, "Devices").

The forward process lives on one device (its kernel's tensors): every public function of the
math and inference layers moves its token inputs there, draws its randomness there and returns
its results there. A generator must be on that device too: torch cannot draw CUDA numbers from
a CPU generator, and silently drawing on another device and copying would make results depend
on where they were computed. :func:`check_generator` is the one guard.
"""
from __future__ import annotations

import torch


def same_device(a: torch.device, b: torch.device) -> bool:
    """Whether ``a`` and ``b`` are one device (``cuda`` and ``cuda:0`` count as the same when the
    current CUDA device is 0)."""
    if a.type != b.type:
        return False
    if a.type != "cuda" or a.index == b.index:
        return True
    current = torch.cuda.current_device() if torch.cuda.is_available() else 0
    return (current if a.index is None else a.index) == (current if b.index is None else b.index)


def check_generator(generator: torch.Generator | None, device: torch.device | str) -> None:
    """Raise ``ValueError`` unless ``generator`` is ``None`` or on ``device``."""
    device = torch.device(device)
    if generator is not None and not same_device(generator.device, device):
        raise ValueError(f"the generator is on {generator.device} but the work runs on {device}: create it with "
                         f"torch.Generator(device={str(device)!r}) (or move the process with .to())")
