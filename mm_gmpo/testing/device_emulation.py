"""Run real code on a CPU as if the model lived on a GPU, so that a missing ``.to(device)`` fails as it would there.

A CPU build of PyTorch has no CUDA device, and on a CPU every tensor is on the same device, so a batch that nobody
moved to the model's device goes unnoticed until a user runs on a GPU. :func:`emulated_device` makes a second
device: inside it, tensors "on ``cuda:0``" are :class:`EmulatedTensor` wrappers around real CPU tensors (real
values: ``float()``, ``.item()``, data-dependent control flow and autograd all work), and every operation checks
its operands as the CUDA backend does: an emulated tensor meeting a plain CPU tensor with one or more dimensions
raises ``Expected all tensors to be on the same device`` (a 0-dim CPU tensor is allowed, as on CUDA). Factory calls
with ``device="cuda"`` and ``.to("cuda")`` produce emulated tensors; ``.to("cpu")``, ``.cpu()`` and ``.tolist()``
come back as plain ones.

Not emulated: kernels that exist only for CUDA (use ``attn_implementation="eager"``), streams, and CUDA
generators (``torch.Generator(device="cuda")`` cannot be built on a CPU build; tests patch the constructor).
Used by the tests only; it lives in the package so that benchmark and smoke scripts can use it too.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

EMULATED = torch.device("cuda", 0)


class DeviceMismatch(RuntimeError):
    """Raised where a CUDA run would raise: tensors of two devices met in one operation."""


class EmulatedTensor(torch.Tensor):
    """A real CPU tensor that reports ``device=cuda:0``."""

    inner: torch.Tensor

    @staticmethod
    def __new__(cls, inner: torch.Tensor, requires_grad: bool | None = None):
        out = torch.Tensor._make_wrapper_subclass(
            cls,
            inner.size(),
            strides=inner.stride(),
            storage_offset=inner.storage_offset(),
            dtype=inner.dtype,
            layout=inner.layout,
            device="cpu",  # what C++ sees: its device guards and wrapped scalars (a CUDA guard aborts a CPU build)
            requires_grad=inner.requires_grad if requires_grad is None else requires_grad,
        )
        out.inner = inner
        return out

    @property
    def device(self) -> torch.device:  # what Python code sees
        return EMULATED

    @property
    def is_cuda(self) -> bool:
        return True

    @property
    def is_cpu(self) -> bool:
        return False

    # Python's conversions go through C code that opens a CUDA device guard; read the CPU value instead
    def __float__(self) -> float:
        return float(self.inner)

    def __int__(self) -> int:
        return int(self.inner)

    def __bool__(self) -> bool:
        return bool(self.inner)

    def __index__(self) -> int:
        return self.inner.__index__()

    def tolist(self):
        return self.inner.tolist()

    def numpy(self, *args, **kwargs):
        raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy the tensor first.")

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"EmulatedTensor({self.inner!r}, device='{EMULATED}')"

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        # reached only when no mode is active (e.g. a tensor that escaped the context): behave as inside it
        with EmulatedDevice():
            return func(*args, **(kwargs or {}))


def _is_emulated_device(device) -> bool:
    return device is not None and torch.device(device).type == "cuda"


def _unwrap(x):
    return x.inner if isinstance(x, EmulatedTensor) else x


def _wrap(x):
    return EmulatedTensor(x) if isinstance(x, torch.Tensor) and not isinstance(x, EmulatedTensor) else x


_TO_COPY = {torch.ops.aten._to_copy.default}
# CUDA accepts CPU index tensors here ("indices should be either on cpu or on the same device")
_CPU_INDICES_OK = {torch.ops.aten.index.Tensor, torch.ops.aten.index_put.default, torch.ops.aten.index_put_.default}
_SCALAR = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.item.default}


class EmulatedDevice(TorchDispatchMode):
    """The dispatch mode behind :func:`emulated_device` (see the module docstring)."""

    def __init__(self):
        super().__init__()
        self.ops = 0  # operations that involved an emulated tensor (a test can check the emulation ran)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        flat, _ = tree_flatten((args, kwargs))
        tensors = [t for t in flat if isinstance(t, torch.Tensor)]
        emulated = [t for t in tensors if isinstance(t, EmulatedTensor)]
        if func in _TO_COPY:
            target = kwargs.get("device")
            if target is not None:
                kwargs["device"] = torch.device("cpu")
            out = func(*tree_map(_unwrap, args), **kwargs)
            to_emulated = _is_emulated_device(target) if target is not None else bool(emulated)
            return EmulatedTensor(out) if to_emulated else out
        if emulated:
            self.ops += 1
            indices = {id(t) for t in tree_flatten(args[1])[0]} if func in _CPU_INDICES_OK else set()
            foreign = [
                t for t in tensors if not isinstance(t, EmulatedTensor) and t.dim() > 0 and id(t) not in indices
            ]
            if foreign and func not in _SCALAR:
                raise DeviceMismatch(
                    f"Expected all tensors to be on the same device, but found at least two devices, {EMULATED} "
                    f"and {foreign[0].device}! (in {func}, shape {tuple(foreign[0].shape)} on the CPU)"
                )
        factory_on_emulated = _is_emulated_device(kwargs.get("device"))
        if factory_on_emulated:
            kwargs["device"] = torch.device("cpu")
        out = func(*tree_map(_unwrap, args), **tree_map(_unwrap, kwargs))
        if func in _SCALAR or not (emulated or factory_on_emulated):
            return out
        wrappers = {id(t.inner): t for t in emulated}  # in-place and out= ops return their input itself
        return tree_map(lambda x: wrappers[id(x)] if id(x) in wrappers else _wrap(x), out)


class _Moves(TorchFunctionMode):
    """Moves to ``cuda`` caught before PyTorch's C++ bindings open a CUDA device guard (which aborts a CPU build):
    ``Tensor.to``/``Tensor.cuda`` and ``torch.tensor``/``torch.as_tensor`` with a CUDA device."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in (torch.Tensor.to, torch.Tensor.cuda, torch.Tensor.cpu):
            tensor = args[0]
            if func is torch.Tensor.cuda:
                device, dtype = EMULATED, None
            elif func is torch.Tensor.cpu:
                device, dtype = torch.device("cpu"), None
            else:
                parse = {k: v for k, v in kwargs.items() if k != "copy"}
                device, dtype, _, _ = torch._C._nn._parse_to(*args[1:], **parse)
            if device is not None and device.type == "cpu" and isinstance(tensor, EmulatedTensor):
                # C++ believes the wrapper is on the CPU already and would return it unchanged: copy it out
                # through the dispatcher (autograd records the copy as it does a device move)
                return torch.ops.aten._to_copy.default(tensor, dtype=dtype or tensor.dtype, device=device)
            if device is not None and device.type == "cuda":
                inner = _unwrap(tensor)
                if dtype is not None and dtype != inner.dtype:
                    return EmulatedTensor(inner.to(dtype))
                return tensor if isinstance(tensor, EmulatedTensor) else EmulatedTensor(inner.clone())
        if func in (torch.tensor, torch.as_tensor) and _is_emulated_device(kwargs.get("device")):
            kwargs["device"] = torch.device("cpu")
            return EmulatedTensor(func(*args, **kwargs))
        return func(*args, **kwargs)


def to_emulated(module: torch.nn.Module) -> torch.nn.Module:
    """``module.to("cuda")`` (inside :func:`emulated_device`): parameters and buffers on the emulated device,
    tied parameters still tied."""
    return module.to(EMULATED)


def is_emulated(t: torch.Tensor) -> bool:
    return isinstance(t, EmulatedTensor)


def _host_memory_info(device=None) -> tuple[int, int]:
    """``torch.cuda.mem_get_info`` of the emulated device: (free, total) bytes of the host's memory."""
    page = os.sysconf("SC_PAGE_SIZE")
    return os.sysconf("SC_AVPHYS_PAGES") * page, os.sysconf("SC_PHYS_PAGES") * page


@contextlib.contextmanager
def emulated_device() -> Iterator[EmulatedDevice]:
    """Inside: ``device="cuda"`` means the emulated device, and device mixes raise :class:`DeviceMismatch`."""
    mode = EmulatedDevice()
    lazy_init = torch.cuda._lazy_init
    swap = torch.__future__.get_swap_module_params_on_conversion()
    torch.cuda._lazy_init = lambda: None  # factories with device="cuda" reach the mode instead of failing here
    mem_get_info = torch.cuda.mem_get_info
    torch.cuda.mem_get_info = _host_memory_info  # the emulated device's memory is the host's
    # Module.to swaps each parameter for its moved self (keeps ties); the default would assign a wrapper's
    # data into a plain tensor, which segfaults
    torch.__future__.set_swap_module_params_on_conversion(True)
    try:
        with _Moves(), mode:
            yield mode
    finally:
        torch.cuda._lazy_init = lazy_init
        torch.cuda.mem_get_info = mem_get_info
        torch.__future__.set_swap_module_params_on_conversion(swap)
