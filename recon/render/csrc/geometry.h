// Camera and rotation helpers shared by the projections of 3D Gaussians (project.cpp) and surfels
// (project_surfels.cpp).
#pragma once

#include <initializer_list>

#include "common.h"

namespace recon {

template <typename T>
struct Camera {
  T R[9], t[3], fx, fy, cx, cy;
};

template <typename T>
inline Camera<T> load_camera(const T* viewmat, const T* K) {
  Camera<T> cam;
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 3; ++j) cam.R[i * 3 + j] = viewmat[i * 4 + j];
    cam.t[i] = viewmat[i * 4 + 3];
  }
  cam.fx = K[0];
  cam.cx = K[2];
  cam.fy = K[4];
  cam.cy = K[5];
  return cam;
}

// Rotation matrix (row-major) of the unit quaternion (w, x, y, z).
template <typename T>
inline void quat_to_rotmat(const T* q, T* Rq) {
  const T w = q[0], x = q[1], y = q[2], z = q[3];
  Rq[0] = T(1) - T(2) * (y * y + z * z);
  Rq[1] = T(2) * (x * y - w * z);
  Rq[2] = T(2) * (x * z + w * y);
  Rq[3] = T(2) * (x * y + w * z);
  Rq[4] = T(1) - T(2) * (x * x + z * z);
  Rq[5] = T(2) * (y * z - w * x);
  Rq[6] = T(2) * (x * z - w * y);
  Rq[7] = T(2) * (y * z + w * x);
  Rq[8] = T(1) - T(2) * (x * x + y * y);
}

// dL/dq (unit quaternion) from dL/dRq.
template <typename T>
inline void rotmat_to_quat_backward(const T* q, const T* g, T* gq) {
  const T w = q[0], x = q[1], y = q[2], z = q[3];
  gq[0] = T(2) * (-z * g[1] + y * g[2] + z * g[3] - x * g[5] - y * g[6] + x * g[7]);
  gq[1] = T(2) * (y * g[1] + z * g[2] + y * g[3] - T(2) * x * g[4] - w * g[5] + z * g[6] + w * g[7] -
                  T(2) * x * g[8]);
  gq[2] = T(2) * (-T(2) * y * g[0] + x * g[1] + w * g[2] + x * g[3] + z * g[5] - w * g[6] + z * g[7] -
                  T(2) * y * g[8]);
  gq[3] = T(2) * (-T(2) * z * g[0] - w * g[1] + x * g[2] + w * g[3] - T(2) * z * g[4] + y * g[5] + x * g[6] +
                  y * g[7]);
}

inline void check_project_inputs(const at::Tensor& means, const at::Tensor& quats, const at::Tensor& scales,
                          const at::Tensor& viewmats, const at::Tensor& Ks) {
  RECON_CHECK_INPUT(means);
  RECON_CHECK_INPUT(quats);
  RECON_CHECK_INPUT(scales);
  RECON_CHECK_INPUT(viewmats);
  RECON_CHECK_INPUT(Ks);
  const auto dt = means.scalar_type();
  TORCH_CHECK(quats.scalar_type() == dt && scales.scalar_type() == dt && viewmats.scalar_type() == dt &&
                  Ks.scalar_type() == dt,
              "project: all inputs must share one dtype");
}

// Incoming gradients of a projection's backward: each is empty (zero) or a contiguous CPU tensor of the means' dtype.
inline void check_project_grads(const char* op, const at::Tensor& means,
                                std::initializer_list<const at::Tensor*> grads) {
  for (const auto* g : grads) {
    if (g->numel() > 0) {
      RECON_CHECK_INPUT(*g);
      TORCH_CHECK(g->scalar_type() == means.scalar_type(), op, ": gradient dtype mismatch");
    }
  }
}

}  // namespace recon
