"""The CUDA sources of zrcore._C compile with nvcc (nothing runs: this machine may have no GPU), and the bindings
compile with their CUDA declarations. On a CPU-only torch the CUDA headers lack one generated file, which the test
supplies (it only names the shared-library build)."""

import os
import shutil
import subprocess
import sysconfig
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from torch.utils import cpp_extension

ROOT = Path(__file__).resolve().parents[1]
CUDA_SOURCES = sorted((ROOT / "csrc" / "cuda").glob("*.cu"))


def _nvcc() -> str | None:
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home and (Path(home) / "bin" / "nvcc").exists():
        return str(Path(home) / "bin" / "nvcc")
    return shutil.which("nvcc")


def _include_flags(tmp_path: Path) -> list[str]:
    dirs = cpp_extension.include_paths() + [sysconfig.get_paths()["include"]]
    torch_include = Path(dirs[0])
    if not (torch_include / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h").exists():  # CPU-only wheel
        shim = tmp_path / "shim" / "c10" / "cuda" / "impl"
        shim.mkdir(parents=True)
        (shim / "cuda_cmake_macros.h").write_text("#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n")
        dirs.append(str(tmp_path / "shim"))
    return [f"-I{d}" for d in dirs]


def _defines() -> list[str]:
    return ["-DTORCH_EXTENSION_NAME=_C", "-DTORCH_API_INCLUDE_EXTENSION_H", "-DZRCORE_WITH_CUDA",
            f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"]


def _run(cmd: list[str]) -> tuple[int, str]:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    return proc.returncode, proc.stderr[-4000:]


@pytest.mark.skipif(_nvcc() is None, reason="nvcc not found (set CUDA_HOME)")
def test_cuda_sources_compile_with_nvcc(tmp_path):
    assert CUDA_SOURCES, "csrc/cuda has no .cu sources"
    flags = ["-std=c++20", "-O1", "-Xcompiler", "-fPIC", "-gencode", "arch=compute_90,code=sm_90",
             *cpp_extension.COMMON_NVCC_FLAGS, *_include_flags(tmp_path), *_defines()]
    cmds = [[_nvcc(), "-c", str(src), "-o", str(tmp_path / f"{src.stem}.o"), *flags] for src in CUDA_SOURCES]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(_run, cmds))
    for src, (rc, err) in zip(CUDA_SOURCES, results):
        assert rc == 0, f"nvcc failed on {src.name}:\n{err}"
        assert (tmp_path / f"{src.stem}.o").stat().st_size > 0


@pytest.mark.skipif(shutil.which("c++") is None, reason="no C++ compiler")
def test_bindings_compile_with_cuda_declarations(tmp_path):
    rc, err = _run(["c++", "-std=c++20", "-fsyntax-only", str(ROOT / "csrc" / "bindings.cpp"),
                    *_include_flags(tmp_path), *_defines()])
    assert rc == 0, err
