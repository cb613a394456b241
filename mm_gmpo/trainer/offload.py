"""A frozen module kept in host memory and copied onto the device only while it runs (the KL reference).

The host copy never changes, so leaving the device costs nothing: each parameter and buffer is swapped
(``torch.utils.swap_tensors``, as ``Module.to`` does) with its device copy on the way in and swapped back on the
way out, and the device copies are released. Tied parameters stay tied (one object, swapped once).

Host memory: every tensor of the module becomes a view into ONE flat byte buffer (:func:`pack_into_flat_buffer`),
filled tensor by tensor so that the process holds the weights plus one tensor at most while packing. On a GPU
machine that buffer is page-locked in place with ``cudaHostRegister`` (exactly its size), so the copy in is an
asynchronous, full-bandwidth transfer. Pinning tensor by tensor (``Tensor.pin_memory()``) would go through torch's
caching host allocator, which rounds every block up to a power of two and keeps it: up to 2x the weights pinned
(about 29 GiB for Qwen2.5-VL-7B's 15.45 GiB in bf16, per process).
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections.abc import Callable, Iterator

import torch

log = logging.getLogger(__name__)

ALIGN = 256  # bytes: every view starts on an address that any dtype (and vectorised copies) can use


def _aligned(nbytes: int) -> int:
    return (nbytes + ALIGN - 1) // ALIGN * ALIGN


def pack_into_flat_buffer(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Move the host ``tensors`` (parameters or buffers, any dtypes) into one flat uint8 buffer, each becoming a
    view of it (``t.data`` is replaced, so modules keep their objects). Returns the buffer ``[sum of aligned
    nbytes]``. The old storage of each tensor is released as soon as it is copied."""
    sizes = [_aligned(t.numel() * t.element_size()) for t in tensors]
    flat = torch.empty(sum(sizes), dtype=torch.uint8)
    offset = 0
    for t, size in zip(tensors, sizes, strict=True):
        nbytes = t.numel() * t.element_size()
        view = flat[offset : offset + nbytes].view(t.dtype).view(t.shape)
        view.copy_(t.data)
        t.data = view
        offset += size
    return flat


def register_pinned(flat: torch.Tensor) -> Callable[[], None]:
    """Page-lock ``flat``'s memory in place (``cudaHostRegister``, no rounding, no caching allocator); returns the
    function that unregisters it. Needs a CUDA device."""
    cudart = torch.cuda.cudart()
    pointer, nbytes = flat.data_ptr(), flat.numel() * flat.element_size()
    error = int(cudart.cudaHostRegister(pointer, nbytes, 0))
    if error:
        raise RuntimeError(f"cudaHostRegister of the offloaded reference ({nbytes / 2**30:.2f} GiB) failed: {error}")
    return lambda: cudart.cudaHostUnregister(pointer)


class OffloadedModule:
    def __init__(
        self, module: torch.nn.Module, device: torch.device, *, offload: bool = True, pin: bool | None = None
    ):
        """``pin``: page-lock the host buffer; default on a CUDA device of a machine that has one."""
        self.module = module
        self.device = torch.device(device)
        self.offload = offload
        self.weight_bytes = sum(t.numel() * t.element_size() for t in self._tensors())
        self.pinned_bytes = 0
        if not offload:
            return
        module.to("cpu")
        self.flat = pack_into_flat_buffer(self._tensors())
        if pin if pin is not None else (self.device.type == "cuda" and torch.cuda.is_available()):
            unregister = register_pinned(self.flat)
            # unregister before the buffer can be freed: the module's views keep it alive past this object
            weakref.finalize(self, unregister)
            self.pinned_bytes = self.flat.numel()
            log.info(
                "reference offloaded: %.2f GiB pinned for %.2f GiB of weights",
                self.pinned_bytes / 2**30,
                self.weight_bytes / 2**30,
            )

    @classmethod
    def resident(cls, module: torch.nn.Module) -> OffloadedModule:
        """A module that stays where it is (``model.ref_offload=false``)."""
        return cls(module, next(module.parameters()).device, offload=False)

    def _tensors(self) -> list[torch.Tensor]:
        return [*self.module.parameters(), *self.module.buffers()]

    def metrics(self) -> dict[str, float]:
        """``perf/ref_offload_pinned_gib`` where the host copy is pinned (a GPU run with ``model.ref_offload``)."""
        return {"perf/ref_offload_pinned_gib": self.pinned_bytes / 2**30} if self.pinned_bytes else {}

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
