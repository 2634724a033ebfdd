// Projection of 2D Gaussian surfels, forward and hand-written backward: the C++ twin of
// recon/render/surfels.py::project_surfels (steps 1-4 of its docstring, which is the contract).
//
// Per camera c and surfel n: p = R mean + t, culled outside [near, far]; the camera-space tangent axes
// a_u = s_u R Rq[:,0], a_v = s_v R Rq[:,1] mapped by K into the payload (K a_u, K a_v); means2d the projected
// centre; the normal R Rq[:,2] turned towards the camera; the screen radius of the 3-sigma disc from the dual
// conic C* = M diag(1, 1, -1/9) M^T with M = [K a_u | K a_v | (mx z, my z, z)]. Discrete decisions (culling,
// radius, normal sign) take no gradient; the camera is a constant.
#include "common.h"
#include "geometry.h"
#include "ops.h"

namespace recon {
namespace {

constexpr double kRadiusMax = double(1 << 24);  // exact in int32 and float32 (surfels.py RADIUS_MAX)

template <typename T>
struct SurfelProjected {
  T p[3], qn[4], qnorm, Rq[9], A[9];  // A = R Rq: columns are the camera-space axes
  T au[3], av[3], ku[3], kv[3], mx, my, flip;
  bool in_range, visible;
  T radius;
};

template <typename T>
inline void k_times(const Camera<T>& cam, const T* a, T* out) {
  out[0] = cam.fx * a[0] + cam.cx * a[2];
  out[1] = cam.fy * a[1] + cam.cy * a[2];
  out[2] = a[2];
}

template <typename T>
inline void project_surfel(const Camera<T>& cam, const T* mean, const T* quat, const T* scale, int W, int H,
                           T near_plane, T far_plane, T radius_clip, SurfelProjected<T>& o) {
  for (int i = 0; i < 3; ++i)
    o.p[i] = cam.R[i * 3] * mean[0] + cam.R[i * 3 + 1] * mean[1] + cam.R[i * 3 + 2] * mean[2] + cam.t[i];
  const T z = o.p[2];
  o.in_range = z >= near_plane && z <= far_plane && z != T(0);
  const T zs = o.in_range ? z : T(1);
  o.qnorm = std::sqrt(quat[0] * quat[0] + quat[1] * quat[1] + quat[2] * quat[2] + quat[3] * quat[3]);
  for (int i = 0; i < 4; ++i) o.qn[i] = quat[i] / o.qnorm;
  quat_to_rotmat(o.qn, o.Rq);
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)
      o.A[i * 3 + j] = cam.R[i * 3] * o.Rq[j] + cam.R[i * 3 + 1] * o.Rq[3 + j] + cam.R[i * 3 + 2] * o.Rq[6 + j];
  for (int i = 0; i < 3; ++i) {
    o.au[i] = o.A[i * 3] * scale[0];
    o.av[i] = o.A[i * 3 + 1] * scale[1];
  }
  k_times(cam, o.au, o.ku);
  k_times(cam, o.av, o.kv);
  o.mx = cam.fx * o.p[0] / zs + cam.cx;
  o.my = cam.fy * o.p[1] / zs + cam.cy;
  const T n_dot_p = o.A[2] * o.p[0] + o.A[5] * o.p[1] + o.A[8] * o.p[2];
  const T p_norm = std::sqrt(o.p[0] * o.p[0] + o.p[1] * o.p[1] + o.p[2] * o.p[2]);
  o.flip = n_dot_p > T(1e-6) * p_norm ? T(-1) : T(1);  // edge-on (n.p = 0 up to rounding): kept, as in surfels.py

  // Radius of the 3-sigma disc's image (binning only).
  const T c[3] = {o.mx * zs, o.my * zs, zs};
  auto dual = [&](int i, int j) { return o.ku[i] * o.ku[j] + o.kv[i] * o.kv[j] - c[i] * c[j] / T(9); };
  const T c33 = dual(2, 2);
  const bool bounded = c33 < T(0);
  T ext = T(kRadiusMax);
  if (bounded) {
    const T ox = dual(0, 2) / c33, oy = dual(1, 2) / c33;
    const T hx = std::sqrt(std::max(T(0), ox * ox - dual(0, 0) / c33));
    const T hy = std::sqrt(std::max(T(0), oy * oy - dual(1, 1) / c33));
    ext = std::max(std::abs(ox - o.mx) + hx, std::abs(oy - o.my) + hy);
    ext = std::max(ext, T(3) / std::sqrt(T(2)));
    if (!std::isfinite(ext)) ext = T(kRadiusMax);
  }
  const T r = std::min(std::ceil(ext), T(kRadiusMax));
  const bool on_image = (o.mx + r > T(0)) && (o.mx - r < T(W)) && (o.my + r > T(0)) && (o.my - r < T(H));
  o.visible = o.in_range && bounded && r > radius_clip && on_image;
  o.radius = o.visible ? r : T(0);
}

template <typename T>
void forward_impl(const at::Tensor& means, const at::Tensor& quats, const at::Tensor& scales,
                  const at::Tensor& viewmats, const at::Tensor& Ks, int W, int H, double near_plane,
                  double far_plane, double radius_clip, bool want_normals, at::Tensor& means2d,
                  at::Tensor& payload, at::Tensor& depths, at::Tensor& radii, at::Tensor& normals) {
  const int64_t C = viewmats.size(0), N = means.size(0);
  const T *m = means.data_ptr<T>(), *q = quats.data_ptr<T>(), *s = scales.data_ptr<T>();
  const T *vm = viewmats.data_ptr<T>(), *K = Ks.data_ptr<T>();
  T *o2d = means2d.data_ptr<T>(), *opl = payload.data_ptr<T>(), *odep = depths.data_ptr<T>();
  int32_t* orad = radii.data_ptr<int32_t>();
  T* onrm = want_normals ? normals.data_ptr<T>() : nullptr;
#pragma omp parallel for schedule(dynamic, 1024) if (N * C >= kParallelMinItems)
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t c = 0; c < C; ++c) {
      const Camera<T> cam = load_camera(vm + c * 16, K + c * 9);
      SurfelProjected<T> o;
      project_surfel(cam, m + n * 3, q + n * 4, s + n * 3, W, H, T(near_plane), T(far_plane), T(radius_clip), o);
      const int64_t cn = c * N + n;
      o2d[cn * 2] = o.visible ? o.mx : T(0);
      o2d[cn * 2 + 1] = o.visible ? o.my : T(0);
      for (int i = 0; i < 3; ++i) {
        opl[cn * 6 + i] = o.ku[i];
        opl[cn * 6 + 3 + i] = o.kv[i];
      }
      odep[cn] = o.p[2];
      orad[cn] = int32_t(o.radius);
      if (onrm)
        for (int i = 0; i < 3; ++i) onrm[cn * 3 + i] = o.flip * o.A[i * 3 + 2];
    }
  }
}

template <typename T>
void backward_impl(const at::Tensor& means, const at::Tensor& quats, const at::Tensor& scales,
                   const at::Tensor& viewmats, const at::Tensor& Ks, int W, int H, double near_plane,
                   double far_plane, double radius_clip, const at::Tensor& g_means2d, const at::Tensor& g_payload,
                   const at::Tensor& g_depths, const at::Tensor& g_normals, at::Tensor& d_means,
                   at::Tensor& d_quats, at::Tensor& d_scales) {
  const int64_t C = viewmats.size(0), N = means.size(0);
  const T *m = means.data_ptr<T>(), *q = quats.data_ptr<T>(), *s = scales.data_ptr<T>();
  const T *vm = viewmats.data_ptr<T>(), *K = Ks.data_ptr<T>();
  const T *gm2d = opt_ptr<T>(g_means2d), *gpl = opt_ptr<T>(g_payload), *gdep = opt_ptr<T>(g_depths),
          *gnrm = opt_ptr<T>(g_normals);
  T *dm = d_means.data_ptr<T>(), *dq = d_quats.data_ptr<T>(), *ds = d_scales.data_ptr<T>();
#pragma omp parallel for schedule(dynamic, 1024) if (N * C >= kParallelMinItems)
  for (int64_t n = 0; n < N; ++n) {
    T acc_m[3] = {0, 0, 0}, acc_q[4] = {0, 0, 0, 0}, acc_s[2] = {0, 0};
    for (int64_t c = 0; c < C; ++c) {
      const Camera<T> cam = load_camera(vm + c * 16, K + c * 9);
      SurfelProjected<T> o;
      project_surfel(cam, m + n * 3, q + n * 4, s + n * 3, W, H, T(near_plane), T(far_plane), T(radius_clip), o);
      const int64_t cn = c * N + n;
      T gp[3] = {0, 0, gdep ? gdep[cn] : T(0)};
      if (o.visible && gm2d) {  // means2d = (fx px / z + cx, fy py / z + cy), zero where culled
        const T z = o.p[2], gmx = gm2d[cn * 2], gmy = gm2d[cn * 2 + 1];
        gp[0] += cam.fx / z * gmx;
        gp[1] += cam.fy / z * gmy;
        gp[2] += -cam.fx * o.p[0] / (z * z) * gmx - cam.fy * o.p[1] / (z * z) * gmy;
      }
      T gA[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};
      if (gpl) {  // K a = (fx a.x + cx a.z, fy a.y + cy a.z, a.z); a_u = s_u A[:,0], a_v = s_v A[:,1]
        const T* g = gpl + cn * 6;
        const T gau[3] = {cam.fx * g[0], cam.fy * g[1], cam.cx * g[0] + cam.cy * g[1] + g[2]};
        const T gav[3] = {cam.fx * g[3], cam.fy * g[4], cam.cx * g[3] + cam.cy * g[4] + g[5]};
        for (int i = 0; i < 3; ++i) {
          gA[i * 3] += gau[i] * s[n * 3];
          gA[i * 3 + 1] += gav[i] * s[n * 3 + 1];
          acc_s[0] += gau[i] * o.A[i * 3];
          acc_s[1] += gav[i] * o.A[i * 3 + 1];
        }
      }
      if (gnrm)
        for (int i = 0; i < 3; ++i) gA[i * 3 + 2] += o.flip * gnrm[cn * 3 + i];
      // A = R Rq  ->  dL/dRq = R^T gA
      T gRq[9];
      for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j)
          gRq[i * 3 + j] = cam.R[i] * gA[j] + cam.R[3 + i] * gA[3 + j] + cam.R[6 + i] * gA[6 + j];
      T gqn[4];
      rotmat_to_quat_backward(o.qn, gRq, gqn);
      const T dot = gqn[0] * o.qn[0] + gqn[1] * o.qn[1] + gqn[2] * o.qn[2] + gqn[3] * o.qn[3];
      for (int i = 0; i < 4; ++i) acc_q[i] += (gqn[i] - o.qn[i] * dot) / o.qnorm;
      // p = R mean + t  ->  dL/dmean = R^T gp
      for (int j = 0; j < 3; ++j) acc_m[j] += cam.R[j] * gp[0] + cam.R[3 + j] * gp[1] + cam.R[6 + j] * gp[2];
    }
    for (int j = 0; j < 3; ++j) dm[n * 3 + j] = acc_m[j];
    for (int j = 0; j < 4; ++j) dq[n * 4 + j] = acc_q[j];
    ds[n * 3] = acc_s[0];
    ds[n * 3 + 1] = acc_s[1];
    ds[n * 3 + 2] = T(0);  // the third scale is not part of a surfel
  }
}

}  // namespace

// Returns {means2d [C,N,2], payload [C,N,6], depths [C,N], radii [C,N] int32, normals [C,N,3] or empty}.
std::vector<at::Tensor> project_surfels_forward(const at::Tensor& means, const at::Tensor& quats,
                                                const at::Tensor& scales, const at::Tensor& viewmats,
                                                const at::Tensor& Ks, int64_t width, int64_t height,
                                                double near_plane, double far_plane, double radius_clip,
                                                bool want_normals) {
  check_project_inputs(means, quats, scales, viewmats, Ks);
  const int64_t C = viewmats.size(0), N = means.size(0);
  auto opts = means.options();
  auto means2d = at::empty({C, N, 2}, opts);
  auto payload = at::empty({C, N, 6}, opts);
  auto depths = at::empty({C, N}, opts);
  auto radii = at::empty({C, N}, opts.dtype(at::kInt));
  auto normals = want_normals ? at::empty({C, N, 3}, opts) : at::empty({0}, opts);
  AT_DISPATCH_FLOATING_TYPES(means.scalar_type(), "project_surfels_forward", [&] {
    forward_impl<scalar_t>(means, quats, scales, viewmats, Ks, int(width), int(height), near_plane, far_plane,
                           radius_clip, want_normals, means2d, payload, depths, radii, normals);
  });
  return {means2d, payload, depths, radii, normals};
}

// Returns {d means [N,3], d quats [N,4], d scales [N,3] (third column zero)}; empty gradients count as zero.
std::vector<at::Tensor> project_surfels_backward(const at::Tensor& means, const at::Tensor& quats,
                                                 const at::Tensor& scales, const at::Tensor& viewmats,
                                                 const at::Tensor& Ks, int64_t width, int64_t height,
                                                 double near_plane, double far_plane, double radius_clip,
                                                 const at::Tensor& g_means2d, const at::Tensor& g_payload,
                                                 const at::Tensor& g_depths, const at::Tensor& g_normals) {
  check_project_inputs(means, quats, scales, viewmats, Ks);
  check_project_grads("project_surfels_backward", means, {&g_means2d, &g_payload, &g_depths, &g_normals});
  auto d_means = at::empty_like(means), d_quats = at::empty_like(quats), d_scales = at::empty_like(scales);
  AT_DISPATCH_FLOATING_TYPES(means.scalar_type(), "project_surfels_backward", [&] {
    backward_impl<scalar_t>(means, quats, scales, viewmats, Ks, int(width), int(height), near_plane, far_plane,
                            radius_clip, g_means2d, g_payload, g_depths, g_normals, d_means, d_quats, d_scales);
  });
  return {d_means, d_quats, d_scales};
}

}  // namespace recon
