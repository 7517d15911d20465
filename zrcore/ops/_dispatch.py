"""Which implementation of an op runs: one resolver for every op, its backends and dtypes declared once.

``impl`` is one of ``auto | triton | ext | torch``:

- ``triton``: a Triton kernel (for the selected-token log-probs: liger-kernel's); CUDA tensors, or CPU tensors
  under ``TRITON_INTERPRET=1`` when asked for by name;
- ``ext``: the compiled extension ``zrcore._C`` (CPU kernels; CUDA kernels when it was built with CUDA);
- ``torch``: torch operations only, every floating dtype;
- ``auto``: the first of triton (CUDA only), ext, torch that the op has and that takes the inputs.

The float64 rule: the compiled backends take float32 / bfloat16 / float16 only (each op narrows further below), so
float64 inputs, which are the float64 reference runs, resolve to ``torch`` under ``auto`` and an explicit compiled
``impl`` raises, naming the op and the rule.
"""

from __future__ import annotations

import functools
import importlib
import os
import warnings
from dataclasses import dataclass, field

import torch
from torch._subclasses.fake_tensor import is_fake

try:  # Triton is a Linux dependency; elsewhere only the torch paths exist
    import triton
    import triton.language as tl

    HAS_TRITON = True
except Exception:  # pragma: no cover
    triton = tl = None
    HAS_TRITON = False

IMPLS = ("auto", "triton", "ext", "torch")
HALF_AND_SINGLE = (torch.float32, torch.bfloat16, torch.float16)


@dataclass(frozen=True)
class OpBackends:
    """The backends of one op besides ``torch``: backend -> device type -> the dtypes it takes; ``requires``:
    backend -> the module it imports to run (a package besides Triton and the extension, e.g. liger-kernel)."""

    name: str
    backends: dict = field(default_factory=dict)
    note: str = ""
    requires: dict = field(default_factory=dict)

    def dtypes(self, backend: str, device_type: str) -> tuple:
        return self.backends.get(backend, {}).get(device_type, ())


def _both(dtypes: tuple) -> dict:
    return {"cuda": dtypes, "cpu": dtypes}


OPS = {
    op.name: op
    for op in (
        OpBackends("score_distribution", {"triton": _both(HALF_AND_SINGLE)}),
        OpBackends("pairwise_gap", {"triton": _both(HALF_AND_SINGLE)}),
        OpBackends("fused_linear_kl", {"triton": _both(HALF_AND_SINGLE)}),
        OpBackends("token_logprobs", {"triton": {"cuda": HALF_AND_SINGLE}}, note="triton is liger-kernel's",
                   requires={"triton": "liger_kernel.transformers"}),
        OpBackends("group_norm_silu", {"ext": {"cpu": (torch.float32,), "cuda": HALF_AND_SINGLE}}),
        OpBackends("cfg_euler_step", {"ext": _both((torch.float32,))}, note="the dtype is that of the latents x"),
    )
}


def triton_available() -> bool:
    return HAS_TRITON


def interpret_mode() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


_REAL = (torch.Tensor, torch.nn.Parameter)  # plain tensors: no fake-tensor test needed


def is_tracing(*tensors: torch.Tensor | None) -> bool:
    """Whether the caller is being traced rather than run: under torch.compile, or (for a backward that was handed
    its saved tensors) on fake tensors, as AOT dispatch traces it. Value checks that read tensor contents are skipped
    then, and the registered ops are called instead of their eager fast paths and launchers."""
    if torch.compiler.is_compiling():
        return True
    return any(t is not None and t.__class__ not in _REAL and is_fake(t) for t in tensors)


def extension():
    """The compiled module zrcore._C (its import registers the torch.ops.zrcore.* C++ ops), or None when zrcore was
    installed without it (ZRCORE_BUILD_EXT=0)."""
    try:
        from zrcore import _C
    except ImportError:
        return None
    return _C


@functools.cache
def _import_error(module: str) -> str | None:
    """Why ``module`` does not import here (once per process), or None when it does."""
    try:
        importlib.import_module(module)
    except Exception as err:  # ImportError, or a package that breaks on import
        return f"{module.split('.')[0].replace('_', '-')} does not import ({type(err).__name__}: {err})"
    return None


def _unavailable(backend: str, device_type: str, spec: OpBackends | None = None) -> str | None:
    """Why ``backend`` (of the op ``spec``) cannot run on this device type here, or None when it can."""
    module = spec.requires.get(backend) if spec is not None else None
    reason = _import_error(module) if module is not None else None
    if reason is not None:
        return reason
    if backend == "triton":
        if not HAS_TRITON:
            return "the triton package failed to import"
        if device_type != "cuda" and not interpret_mode():
            return "CPU tensors need TRITON_INTERPRET=1 in the environment (set before triton is imported)"
        return None
    if backend == "ext":
        ext = extension()
        if ext is None:
            return "zrcore was installed without its compiled extension (ZRCORE_BUILD_EXT=0)"
        if device_type == "cuda" and not ext.with_cuda:
            return "zrcore._C was built without CUDA (set CUDA_HOME and reinstall with a CUDA build of torch)"
        return None
    return None


def resolve_impl(op: str, impl: str, dtype: torch.dtype, *tensors: torch.Tensor | None,
                 unsupported: str | None = None) -> str:
    """The backend that runs ``op`` for inputs of ``dtype`` on the device of ``tensors`` (CUDA when any is).

    ``unsupported``: a reason the compiled backends cannot take these inputs (e.g. "an LM-head bias"); ``auto`` then
    runs torch, an explicit compiled impl raises with it."""
    spec = OPS[op]
    if impl not in IMPLS:
        raise ValueError(f"{op}: impl must be one of {list(IMPLS)}, got {impl!r}")
    device_type = "cuda" if any(t is not None and t.is_cuda for t in tensors) else "cpu"
    if impl == "torch":
        return "torch"
    if impl == "auto":
        return _auto(spec, dtype, device_type, unsupported)
    if impl not in spec.backends:
        have = ", ".join(repr(b) for b in (*spec.backends, "torch"))
        raise ValueError(f"{op}: impl={impl!r} is not a backend of this op; it has {have} (or 'auto')")
    note = f" ({spec.note})" if spec.note else ""
    allowed = spec.dtypes(impl, device_type)
    if not allowed:
        raise RuntimeError(f"{op}: impl={impl!r}{note} runs on {' and '.join(spec.backends[impl])} tensors only, "
                           f"got {device_type} tensors")
    if dtype not in allowed:  # a rule of the op, checked before what this machine has
        names = ", ".join(str(d).replace("torch.", "") for d in allowed)
        raise TypeError(f"{op}: impl={impl!r}{note} takes {names} on {device_type}, got {str(dtype).replace('torch.', '')};"
                        " float64 and other dtypes run impl='torch'")
    reason = _unavailable(impl, device_type, spec)
    if reason is not None:
        raise RuntimeError(f"{op}: impl={impl!r} cannot run on {device_type} tensors here: {reason}")
    if unsupported is not None:
        raise ValueError(f"{op}: impl={impl!r} does not take {unsupported}; use impl='torch' (or 'auto')")
    return impl


_FELL_BACK: set = set()


def _auto(spec: OpBackends, dtype: torch.dtype, device_type: str, unsupported: str | None) -> str:
    """``impl="auto"``: the first of triton (CUDA only), ext that the op has, that takes ``dtype`` and whose
    packages import here; else torch. Falling back for want of a package is said once per op and device type."""
    for backend in ("triton", "ext"):
        if backend == "triton" and device_type != "cuda":
            continue  # the interpreter is for tests, never chosen for the user
        if backend not in spec.backends or dtype not in spec.dtypes(backend, device_type) or unsupported is not None:
            continue
        reason = _unavailable(backend, device_type, spec)
        if reason is None:
            return backend
        if backend in spec.requires and (spec.name, device_type) not in _FELL_BACK:
            _FELL_BACK.add((spec.name, device_type))
            warnings.warn(f"{spec.name}: impl='auto' runs the torch path on {device_type}, since its {backend} "
                          f"backend cannot run here: {reason}", RuntimeWarning, stacklevel=4)
    return "torch"


class DefinedOp:
    """One zrcore op (``define_op``): calling it runs the registered custom op ``torch.ops.zrcore.<name>`` while it
    is traced (torch.compile, fake tensors) and its eager twin (the same forward, setup_context and backward
    without the dispatcher) otherwise. ``op`` is the registered op (for ``opcheck`` and re-entrant calls), ``eager``
    the twin."""

    __slots__ = ("name", "op", "eager", "_apply")

    def __init__(self, name: str, op, eager):
        self.name, self.op, self.eager = name, op, eager
        self._apply = op if eager is None else eager.apply

    def __call__(self, *args):
        return self.op(*args) if is_tracing() else self._apply(*args)

    def __repr__(self) -> str:
        return f"DefinedOp(zrcore::{self.name})"


def define_op(name: str, forward, fake, *, setup_context=None, backward=None) -> DefinedOp:
    """Registers ``zrcore::<name>``: ``forward`` (type-annotated; it takes and returns tensors and plain values and
    mutates nothing) as a torch.library custom op, ``fake`` (same arguments, empty outputs of the right shapes and
    dtypes) for tracing, and, with ``backward``, its autograd: ``setup_context(ctx, inputs, output)`` saves what
    ``backward(ctx, *grad_outputs)`` needs; backward returns one gradient (or None) per input. Returns the one
    callable the op's public function calls."""
    if (setup_context is None) != (backward is None):
        raise ValueError(f"define_op({name!r}): setup_context and backward go together")
    op = torch.library.custom_op(f"zrcore::{name}", forward, mutates_args=())
    op.register_fake(fake)
    eager = None
    if backward is not None:
        op.register_autograd(backward, setup_context=setup_context)
        eager = eager_twin(f"_{name}_eager", forward, setup_context, backward)
    return DefinedOp(name, op, eager)


def define_backward_op(name: str, backward_fn, fake):
    """A backward computation with tensors of its own (kernels a backward launches) as the op
    ``zrcore::<name>``, so that a compiled graph's backward traces it. Returns ``run(*args, traced)``: the op when
    ``traced`` (``is_tracing`` of the saved tensors), ``backward_fn`` itself otherwise."""
    op = torch.library.custom_op(f"zrcore::{name}", backward_fn, mutates_args=())
    op.register_fake(fake)

    def run(*args, traced: bool):
        return op(*args) if traced else backward_fn(*args)

    run.op = op
    return run


def register_extension_op(name: str, fake, *, setup_context=None, backward=None, backward_name: str = "",
                          backward_fake=None) -> bool:
    """For an op that ``zrcore._C`` defines in C++ (csrc/bindings.cpp): its fake kernel, its backward op's fake
    kernel and its autograd, registered from Python. Returns False (registering nothing) when zrcore was installed
    without the extension."""
    if extension() is None:
        return False
    torch.library.register_fake(f"zrcore::{name}", fake)
    if backward_name:
        torch.library.register_fake(f"zrcore::{backward_name}", backward_fake)
    if backward is not None:
        torch.library.register_autograd(f"zrcore::{name}", backward, setup_context=setup_context)
    return True


def eager_twin(name: str, forward, setup_context, backward) -> type[torch.autograd.Function]:
    """An autograd.Function running a registered op's own forward, setup_context and backward without the
    dispatcher: the eager fast path. Under torch.compile the registered op is called instead. (Written in the
    ctx-first form: a Function with a separate setup_context binds its arguments with ``inspect`` on every call.)"""

    def run(ctx, *inputs):
        output = forward(*inputs)
        setup_context(ctx, inputs, output)
        return output

    return type(name, (torch.autograd.Function,), {
        "forward": staticmethod(run), "backward": staticmethod(backward),
        "op_forward": staticmethod(forward), "op_setup_context": staticmethod(setup_context),
    })


_TICKETS: dict = {}


def _current_stream_handle(device: torch.device) -> int:
    if device.type != "cuda":
        return 0
    try:
        return torch._C._cuda_getCurrentRawStream(device.index)
    except AttributeError:  # pragma: no cover - older torch
        return torch.cuda.current_stream(device).cuda_stream


def ticket_counters(device: torch.device, n: int) -> torch.Tensor:
    """At least ``n`` int32 counters, all zero, for kernels whose last-finishing program does a final reduction
    (an atomic ticket per group of programs). A kernel leaves every counter it used at zero again, so no fill is
    launched per call; one set per device and stream, since launches on one stream run one after another."""
    if device.type == "cuda" and device.index is None:  # "cuda" and "cuda:0" must share one set
        device = torch.device("cuda", torch.cuda.current_device())
    key = (device, _current_stream_handle(device))
    counters = _TICKETS.get(key)
    if counters is None or counters.numel() < n:
        counters = _TICKETS[key] = torch.zeros(max(n, 64), dtype=torch.int32, device=device)
    return counters


_WORKSPACES: dict = {}


def workspace(device: torch.device, name: str, numel: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A scratch buffer of at least ``numel`` elements, kept per device, stream and name, for intermediates that
    live within one op call (launches on one stream run one after another): no allocation per call."""
    key = (device, _current_stream_handle(device), name, dtype)
    buf = _WORKSPACES.get(key)
    if buf is None or buf.numel() < numel:
        buf = _WORKSPACES[key] = torch.empty(max(numel, 1024), dtype=dtype, device=device)
    return buf[:numel]
