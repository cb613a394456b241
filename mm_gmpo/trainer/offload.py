"""A frozen module kept in host memory and copied onto the device only while it runs (the KL reference).

The host copy never changes, so leaving the device costs nothing: each parameter and buffer is swapped
(``torch.utils.swap_tensors``, as ``Module.to`` does) with its device copy on the way in and swapped back on the
way out, and the device copies are released. Tied parameters stay tied (one object, swapped once). On a GPU
machine the host tensors are pinned, which makes the copy in an asynchronous, full-bandwidth transfer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


class OffloadedModule:
    def __init__(self, module: torch.nn.Module, device: torch.device, *, offload: bool = True):
        self.module = module
        self.device = torch.device(device)
        self.offload = offload
        if offload:
            module.to("cpu")
            if self.device.type == "cuda" and torch.cuda.is_available():
                for t in self._tensors():
                    t.data = t.data.pin_memory()

    @classmethod
    def resident(cls, module: torch.nn.Module) -> OffloadedModule:
        """A module that stays where it is (``model.ref_offload=false``)."""
        return cls(module, next(module.parameters()).device, offload=False)

    def _tensors(self) -> list[torch.Tensor]:
        return [*self.module.parameters(), *self.module.buffers()]

    @contextlib.contextmanager
    def on_device(self) -> Iterator[torch.nn.Module]:
        """The module with its weights on the device inside the block, back in host memory after it."""
        if not self.offload:
            yield self.module
            return
        swapped = []
        try:
            for t in self._tensors():
                moved = t.detach().to(self.device, non_blocking=True)
                twin = torch.nn.Parameter(moved, requires_grad=False) if isinstance(t, torch.nn.Parameter) else moved
                torch.utils.swap_tensors(t, twin)  # t is now the device copy, twin the host tensor
                swapped.append((t, twin))
            yield self.module
        finally:
            for t, twin in swapped:
                torch.utils.swap_tensors(t, twin)
            del swapped
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
