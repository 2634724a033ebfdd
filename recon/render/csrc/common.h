// Shared helpers for the CPU rasterizer kernels: tensor checks, OpenMP wrappers, compositing constants.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace recon {

// Compositing constants; passed in from recon/render/outputs.py so Python stays the single source of truth.
struct RasterConsts {
  double alpha_max;
  double alpha_min;
  double t_eps;
  double ndc_near;
  double ndc_far;
};

// Below these sizes a pass runs on the calling thread: waking a team costs more than the work, and a barrier on a
// shared machine can wait for a descheduled thread.
constexpr int64_t kParallelMinItems = 4096;  // primitives (projection, SH, binning, packing)
constexpr int64_t kParallelMinPairs = 2048;  // primitive-tile pairs (compositing)

inline int max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

#define RECON_CHECK_INPUT(x) \
  TORCH_CHECK((x).device().is_cpu() && (x).is_contiguous(), #x " must be a contiguous CPU tensor")

// Tensors that may be empty (optional inputs); returns nullptr for an empty tensor.
template <typename T>
inline const T* opt_ptr(const at::Tensor& t) {
  return t.numel() > 0 ? t.data_ptr<T>() : nullptr;
}

}  // namespace recon
