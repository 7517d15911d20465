"""Build script: the Python package plus the optional compiled extension ``zrcore._C``.

C++ sources in ``csrc/*.cpp`` (CPU kernels and bindings) are always compiled when present; CUDA sources in
``csrc/cuda/*.cu`` are added when a CUDA toolkit is found at build time. Environment switches:

- ``ZRCORE_BUILD_EXT=0``   skip the extension entirely (pure Python install).
- ``ZRCORE_BUILD_CUDA=0|1`` force the CUDA sources off or on (default: on when ``CUDA_HOME`` is found and torch
  is a CUDA build).
"""

import glob
import os

from setuptools import setup


def _extensions():
    if os.environ.get("ZRCORE_BUILD_EXT", "1") == "0":
        return [], {}
    cpp_sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    if not cpp_sources:
        return [], {}
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    want_cuda = os.environ.get("ZRCORE_BUILD_CUDA")
    cuda_possible = CUDA_HOME is not None and torch.version.cuda is not None  # a CPU torch cannot link CUDA code
    use_cuda = cuda_possible if want_cuda is None else want_cuda == "1"
    cxx_flags = ["-O3"]  # the C++ standard: torch.utils.cpp_extension picks the one its headers need
    if use_cuda:
        cuda_sources = sorted(glob.glob("csrc/cuda/*.cu"))
        ext = CUDAExtension(
            "zrcore._C",
            cpp_sources + cuda_sources,
            define_macros=[("ZRCORE_WITH_CUDA", None)],
            extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "--use_fast_math"]},
        )
    else:
        ext = CppExtension("zrcore._C", cpp_sources, extra_compile_args={"cxx": cxx_flags})
    # ninja compiles the sources in parallel (MAX_JOBS caps it); without ninja the build falls back to one at a time
    return [ext], {"build_ext": BuildExtension}


ext_modules, cmdclass = _extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
