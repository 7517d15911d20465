// Launch helpers shared by the CUDA kernels of zrcore._C.
#pragma once

#include <c10/cuda/CUDAException.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

namespace zrcore {

constexpr int kThreads = 256;  // threads per block of every kernel here

// Blocks of a grid-stride element-wise kernel over n elements: enough to fill the device, no more.
inline int elementwise_blocks(int64_t n) {
  int device = 0, sms = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>((n + kThreads - 1) / kThreads, int64_t{sms} * 32)));
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); the result is valid in thread 0. shared holds
// one value per warp.
template <typename T>
__device__ T block_sum(T v, T* shared) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffff, v, offset);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = threadIdx.x < blockDim.x / 32 ? shared[lane] : T(0);
  if (warp == 0)
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffff, v, offset);
  __syncthreads();
  return v;
}

// Block sums of two per-thread partials, stored by thread 0 at out_a[index] and out_b[index].
template <typename T>
__device__ void store_block_sums(T a, T b, T* shared, T* out_a, T* out_b, int64_t index) {
  a = block_sum(a, shared);
  b = block_sum(b, shared);
  if (threadIdx.x == 0) {
    out_a[index] = a;
    out_b[index] = b;
  }
}

}  // namespace zrcore
