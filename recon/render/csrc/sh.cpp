// View-dependent colour from real spherical harmonics of degree 0..3, forward and hand-written backward.
//
// colour = max(sum_k Y_k(dir) coeff_k + 0.5, 0), dir = normalise(mean - campos), campos = -R^T t. Basis constants
// and ordering are those of 3DGS / gsplat (recon/render/sh.py lists them). The backward returns the gradients of
// the coefficients and of the means (through dir); the camera is a constant.
#include "common.h"
#include "ops.h"

namespace recon {
namespace {

constexpr double kC0 = 0.28209479177387814;
constexpr double kC1 = 0.4886025119029199;
constexpr double kC2[5] = {1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792,
                           0.5462742152960396};
constexpr double kC3[7] = {-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
                           -0.4570457994644658, 1.445305721320277, -0.5900435899266435};

// Basis values Y[0..nb) at the unit direction (x, y, z); with dY != nullptr also dY_k/d(x, y, z) as dY[3k..3k+2].
template <typename T>
inline void sh_basis(int degree, T x, T y, T z, T* Y, T* dY) {
  Y[0] = T(kC0);
  if (dY) dY[0] = dY[1] = dY[2] = T(0);
  if (degree < 1) return;
  const T c1 = T(kC1);
  Y[1] = -c1 * y;
  Y[2] = c1 * z;
  Y[3] = -c1 * x;
  if (dY) {
    T d[9] = {0, -c1, 0, 0, 0, c1, -c1, 0, 0};
    for (int i = 0; i < 9; ++i) dY[3 + i] = d[i];
  }
  if (degree < 2) return;
  const T xx = x * x, yy = y * y, zz = z * z;
  Y[4] = T(kC2[0]) * x * y;
  Y[5] = T(kC2[1]) * y * z;
  Y[6] = T(kC2[2]) * (T(2) * zz - xx - yy);
  Y[7] = T(kC2[3]) * x * z;
  Y[8] = T(kC2[4]) * (xx - yy);
  if (dY) {
    T* d = dY + 12;
    d[0] = T(kC2[0]) * y, d[1] = T(kC2[0]) * x, d[2] = T(0);
    d[3] = T(0), d[4] = T(kC2[1]) * z, d[5] = T(kC2[1]) * y;
    d[6] = T(kC2[2]) * T(-2) * x, d[7] = T(kC2[2]) * T(-2) * y, d[8] = T(kC2[2]) * T(4) * z;
    d[9] = T(kC2[3]) * z, d[10] = T(0), d[11] = T(kC2[3]) * x;
    d[12] = T(kC2[4]) * T(2) * x, d[13] = T(kC2[4]) * T(-2) * y, d[14] = T(0);
  }
  if (degree < 3) return;
  Y[9] = T(kC3[0]) * y * (T(3) * xx - yy);
  Y[10] = T(kC3[1]) * x * y * z;
  Y[11] = T(kC3[2]) * y * (T(4) * zz - xx - yy);
  Y[12] = T(kC3[3]) * z * (T(2) * zz - T(3) * xx - T(3) * yy);
  Y[13] = T(kC3[4]) * x * (T(4) * zz - xx - yy);
  Y[14] = T(kC3[5]) * z * (xx - yy);
  Y[15] = T(kC3[6]) * x * (xx - T(3) * yy);
  if (dY) {
    T* d = dY + 27;
    d[0] = T(kC3[0]) * T(6) * x * y, d[1] = T(kC3[0]) * (T(3) * xx - T(3) * yy), d[2] = T(0);
    d[3] = T(kC3[1]) * y * z, d[4] = T(kC3[1]) * x * z, d[5] = T(kC3[1]) * x * y;
    d[6] = T(kC3[2]) * T(-2) * x * y, d[7] = T(kC3[2]) * (T(4) * zz - xx - T(3) * yy),
    d[8] = T(kC3[2]) * T(8) * y * z;
    d[9] = T(kC3[3]) * T(-6) * x * z, d[10] = T(kC3[3]) * T(-6) * y * z,
    d[11] = T(kC3[3]) * (T(6) * zz - T(3) * xx - T(3) * yy);
    d[12] = T(kC3[4]) * (T(4) * zz - T(3) * xx - yy), d[13] = T(kC3[4]) * T(-2) * x * y,
    d[14] = T(kC3[4]) * T(8) * x * z;
    d[15] = T(kC3[5]) * T(2) * x * z, d[16] = T(kC3[5]) * T(-2) * y * z, d[17] = T(kC3[5]) * (xx - yy);
    d[18] = T(kC3[6]) * (T(3) * xx - T(3) * yy), d[19] = T(kC3[6]) * T(-6) * x * y, d[20] = T(0);
  }
}

template <typename T>
inline void camera_position(const T* viewmat, T* campos) {
  for (int j = 0; j < 3; ++j)
    campos[j] = -(viewmat[j] * viewmat[3] + viewmat[4 + j] * viewmat[7] + viewmat[8 + j] * viewmat[11]);
}

template <typename T>
void sh_forward_impl(int degree, const at::Tensor& means, const at::Tensor& coeffs,
                     const at::Tensor& viewmats, at::Tensor& colors) {
  const int64_t C = viewmats.size(0), N = means.size(0);
  const bool per_camera = coeffs.dim() == 4;
  const int64_t K = coeffs.size(-2);
  const int nb = (degree + 1) * (degree + 1);
  const T *m = means.data_ptr<T>(), *co = coeffs.data_ptr<T>(), *vm = viewmats.data_ptr<T>();
  T* out = colors.data_ptr<T>();
#pragma omp parallel for schedule(dynamic, 1024) if (N * C >= kParallelMinItems)
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t c = 0; c < C; ++c) {
      T campos[3];
      camera_position(vm + c * 16, campos);
      const T v[3] = {m[n * 3] - campos[0], m[n * 3 + 1] - campos[1], m[n * 3 + 2] - campos[2]};
      const T len = std::sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
      T Y[16];
      sh_basis<T>(degree, v[0] / len, v[1] / len, v[2] / len, Y, nullptr);
      const T* cf = co + ((per_camera ? c * N : 0) + n) * K * 3;
      for (int ch = 0; ch < 3; ++ch) {
        T acc = T(0);
        for (int k = 0; k < nb; ++k) acc += Y[k] * cf[k * 3 + ch];
        out[(c * N + n) * 3 + ch] = std::max(acc + T(0.5), T(0));
      }
    }
  }
}

template <typename T>
void sh_backward_impl(int degree, const at::Tensor& means, const at::Tensor& coeffs,
                      const at::Tensor& viewmats, const at::Tensor& g_colors, at::Tensor& d_means,
                      at::Tensor& d_coeffs) {
  const int64_t C = viewmats.size(0), N = means.size(0);
  const bool per_camera = coeffs.dim() == 4;
  const int64_t K = coeffs.size(-2);
  const int nb = (degree + 1) * (degree + 1);
  const T *m = means.data_ptr<T>(), *co = coeffs.data_ptr<T>(), *vm = viewmats.data_ptr<T>();
  const T* g = g_colors.data_ptr<T>();
  T *dm = d_means.data_ptr<T>(), *dc = d_coeffs.data_ptr<T>();
#pragma omp parallel for schedule(dynamic, 1024) if (N * C >= kParallelMinItems)
  for (int64_t n = 0; n < N; ++n) {
    T acc_m[3] = {0, 0, 0};
    if (!per_camera) std::fill(dc + n * K * 3, dc + (n + 1) * K * 3, T(0));
    for (int64_t c = 0; c < C; ++c) {
      const int64_t coff = ((per_camera ? c * N : 0) + n) * K * 3;
      if (per_camera) std::fill(dc + coff, dc + coff + K * 3, T(0));
      T campos[3];
      camera_position(vm + c * 16, campos);
      const T v[3] = {m[n * 3] - campos[0], m[n * 3 + 1] - campos[1], m[n * 3 + 2] - campos[2]};
      const T len = std::sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
      const T d[3] = {v[0] / len, v[1] / len, v[2] / len};
      T Y[16], dY[48];
      sh_basis<T>(degree, d[0], d[1], d[2], Y, dY);
      const T* cf = co + coff;
      T gch[3];
      for (int ch = 0; ch < 3; ++ch) {
        T acc = T(0);
        for (int k = 0; k < nb; ++k) acc += Y[k] * cf[k * 3 + ch];
        gch[ch] = (acc + T(0.5) < T(0)) ? T(0) : g[(c * N + n) * 3 + ch];  // clamp_min(., 0) passes at >= 0
      }
      T gd[3] = {0, 0, 0};
      for (int k = 0; k < nb; ++k) {
        const T gY = gch[0] * cf[k * 3] + gch[1] * cf[k * 3 + 1] + gch[2] * cf[k * 3 + 2];
        for (int ch = 0; ch < 3; ++ch) dc[coff + k * 3 + ch] += Y[k] * gch[ch];
        for (int i = 0; i < 3; ++i) gd[i] += gY * dY[k * 3 + i];
      }
      // dir = v / |v|: the gradient w.r.t. v is the tangential part of gd over |v|.
      const T dot = gd[0] * d[0] + gd[1] * d[1] + gd[2] * d[2];
      for (int i = 0; i < 3; ++i) acc_m[i] += (gd[i] - d[i] * dot) / len;
    }
    for (int i = 0; i < 3; ++i) dm[n * 3 + i] = acc_m[i];
  }
}

void check_sh_inputs(int64_t degree, const at::Tensor& means, const at::Tensor& coeffs,
                     const at::Tensor& viewmats) {
  RECON_CHECK_INPUT(means);
  RECON_CHECK_INPUT(coeffs);
  RECON_CHECK_INPUT(viewmats);
  TORCH_CHECK(degree >= 0 && degree <= 3, "sh_degree must be in 0..3");
  TORCH_CHECK(coeffs.dim() == 3 || coeffs.dim() == 4, "SH coefficients must be [N,K,3] or [C,N,K,3]");
  TORCH_CHECK(coeffs.size(-1) == 3 && coeffs.size(-2) >= (degree + 1) * (degree + 1),
              "SH coefficients need K >= (sh_degree+1)^2 and 3 channels");
  TORCH_CHECK(coeffs.size(-3) == means.size(0), "SH coefficients and means disagree on N");
  if (coeffs.dim() == 4) TORCH_CHECK(coeffs.size(0) == viewmats.size(0), "SH coefficients and viewmats disagree on C");
  TORCH_CHECK(coeffs.scalar_type() == means.scalar_type() && viewmats.scalar_type() == means.scalar_type(),
              "SH: all inputs must share one dtype");
}

}  // namespace

at::Tensor sh_forward(int64_t degree, const at::Tensor& means, const at::Tensor& coeffs,
                         const at::Tensor& viewmats) {
  check_sh_inputs(degree, means, coeffs, viewmats);
  auto colors = at::empty({viewmats.size(0), means.size(0), 3}, means.options());
  AT_DISPATCH_FLOATING_TYPES(means.scalar_type(), "sh_forward",
                             [&] { sh_forward_impl<scalar_t>(int(degree), means, coeffs, viewmats, colors); });
  return colors;
}

std::vector<at::Tensor> sh_backward(int64_t degree, const at::Tensor& means, const at::Tensor& coeffs,
                                       const at::Tensor& viewmats, const at::Tensor& g_colors) {
  check_sh_inputs(degree, means, coeffs, viewmats);
  RECON_CHECK_INPUT(g_colors);
  auto d_means = at::empty_like(means);
  auto d_coeffs = at::empty_like(coeffs);
  AT_DISPATCH_FLOATING_TYPES(means.scalar_type(), "sh_backward", [&] {
    sh_backward_impl<scalar_t>(int(degree), means, coeffs, viewmats, g_colors, d_means, d_coeffs);
  });
  return {d_means, d_coeffs};
}

}  // namespace recon
