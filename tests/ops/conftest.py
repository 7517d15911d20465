import pytest

from zrcore.ops._dispatch import interpret_mode, triton_available


def impls():
    """The implementations a test machine can run: torch always, triton on CUDA or under TRITON_INTERPRET=1."""
    import torch

    out = ["torch"]
    if triton_available() and (torch.cuda.is_available() or interpret_mode()):
        out.append("triton")
    return out


def device():
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(params=impls())
def impl(request):
    return request.param
