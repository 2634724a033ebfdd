// EWA projection of 3D Gaussians to the image plane, forward and hand-written backward.
//
// Per camera c and Gaussian n (METHODS.md §2.1, the semantics shared with the pure-torch reference):
// p = R mean + t; culled outside [near, far]; Sigma = Rq diag(s)^2 Rq^T from the normalised quaternion; the
// 2D covariance J R Sigma R^T J^T + eps2d I with gsplat's clamped Jacobian; conic = its inverse; the 3-sigma
// radius; the shortest axis (camera space) flipped to face the camera as the normal. The camera (viewmats, Ks)
// is a constant: no camera-pose gradient.
#include "common.h"
#include "geometry.h"
#include "ops.h"

namespace recon {
namespace {

// Everything the forward computes for one (camera, Gaussian) pair, kept so the backward can reuse it.
template <typename T>
struct Projected {
  T p[3];
  T qn[4], qnorm;
  T Rq[9], M[9], Sc[9];
  T u, v, uc, vc, tx, ty;
  T J[6];
  T a, b, c, det;
  T mx, my;
  bool valid;  // radius > 0
  T radius;
  int axis;     // index of the smallest scale
  T flip;       // +1 or -1: the normal's orientation towards the camera
};

template <typename T>
inline void project_one(const Camera<T>& cam, const T* mean, const T* quat, const T* scale, int W, int H,
                        T eps2d, T near_plane, T far_plane, T radius_clip, Projected<T>& o) {
  o.valid = false;
  for (int i = 0; i < 3; ++i)
    o.p[i] = cam.R[i * 3] * mean[0] + cam.R[i * 3 + 1] * mean[1] + cam.R[i * 3 + 2] * mean[2] + cam.t[i];
  const T z = o.p[2];
  if (!(z >= near_plane && z <= far_plane) || z == T(0)) return;

  o.qnorm = std::sqrt(quat[0] * quat[0] + quat[1] * quat[1] + quat[2] * quat[2] + quat[3] * quat[3]);
  for (int i = 0; i < 4; ++i) o.qn[i] = quat[i] / o.qnorm;
  quat_to_rotmat(o.qn, o.Rq);
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) o.M[i * 3 + j] = o.Rq[i * 3 + j] * scale[j];
  T Sig[9];
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)
      Sig[i * 3 + j] = o.M[i * 3] * o.M[j * 3] + o.M[i * 3 + 1] * o.M[j * 3 + 1] + o.M[i * 3 + 2] * o.M[j * 3 + 2];
  T RS[9];
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)
      RS[i * 3 + j] = cam.R[i * 3] * Sig[j] + cam.R[i * 3 + 1] * Sig[3 + j] + cam.R[i * 3 + 2] * Sig[6 + j];
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)
      o.Sc[i * 3 + j] = RS[i * 3] * cam.R[j * 3] + RS[i * 3 + 1] * cam.R[j * 3 + 1] + RS[i * 3 + 2] * cam.R[j * 3 + 2];

  const T tan_fovx = T(0.5) * T(W) / cam.fx, tan_fovy = T(0.5) * T(H) / cam.fy;
  const T lim_x_pos = (T(W) - cam.cx) / cam.fx + T(0.3) * tan_fovx;
  const T lim_x_neg = cam.cx / cam.fx + T(0.3) * tan_fovx;
  const T lim_y_pos = (T(H) - cam.cy) / cam.fy + T(0.3) * tan_fovy;
  const T lim_y_neg = cam.cy / cam.fy + T(0.3) * tan_fovy;
  o.u = o.p[0] / z;
  o.v = o.p[1] / z;
  o.uc = std::min(std::max(o.u, -lim_x_neg), lim_x_pos);
  o.vc = std::min(std::max(o.v, -lim_y_neg), lim_y_pos);
  o.tx = z * o.uc;
  o.ty = z * o.vc;
  o.J[0] = cam.fx / z;
  o.J[1] = T(0);
  o.J[2] = -cam.fx * o.tx / (z * z);
  o.J[3] = T(0);
  o.J[4] = cam.fy / z;
  o.J[5] = -cam.fy * o.ty / (z * z);

  T JS[6];
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j)
      JS[i * 3 + j] = o.J[i * 3] * o.Sc[j] + o.J[i * 3 + 1] * o.Sc[3 + j] + o.J[i * 3 + 2] * o.Sc[6 + j];
  o.a = JS[0] * o.J[0] + JS[1] * o.J[1] + JS[2] * o.J[2] + eps2d;
  o.b = JS[0] * o.J[3] + JS[1] * o.J[4] + JS[2] * o.J[5];
  o.c = JS[3] * o.J[3] + JS[4] * o.J[4] + JS[5] * o.J[5] + eps2d;
  o.det = o.a * o.c - o.b * o.b;
  if (!(o.det > T(0))) return;

  o.mx = cam.fx * o.p[0] / z + cam.cx;
  o.my = cam.fy * o.p[1] / z + cam.cy;
  const T mid = T(0.5) * (o.a + o.c);
  const T lam = mid + std::sqrt(std::max(T(0.1), mid * mid - o.det));
  o.radius = std::ceil(T(3) * std::sqrt(lam));
  if (!(o.radius > radius_clip)) return;
  if (o.mx + o.radius <= T(0) || o.mx - o.radius >= T(W) || o.my + o.radius <= T(0) || o.my - o.radius >= T(H))
    return;
  o.valid = true;

  o.axis = 0;
  if (scale[1] < scale[o.axis]) o.axis = 1;
  if (scale[2] < scale[o.axis]) o.axis = 2;
  T n[3];
  for (int i = 0; i < 3; ++i)
    n[i] = cam.R[i * 3] * o.Rq[o.axis] + cam.R[i * 3 + 1] * o.Rq[3 + o.axis] + cam.R[i * 3 + 2] * o.Rq[6 + o.axis];
  o.flip = (n[0] * o.p[0] + n[1] * o.p[1] + n[2] * o.p[2] > T(0)) ? T(-1) : T(1);
}

template <typename T>
void project_forward_impl(const at::Tensor& means, const at::Tensor& quats, const at::Tensor& scales,
                          const at::Tensor& viewmats, const at::Tensor& Ks, int W, int H, double eps2d,
                          double near_plane, double far_plane, double radius_clip, bool want_normals,
                          at::Tensor& means2d, at::Tensor& conics, at::Tensor& depths,
                          at::Tensor& radii, at::Tensor& normals) {
  const int64_t C = viewmats.size(0), N = means.size(0);
  const T *m = means.data_ptr<T>(), *q = quats.data_ptr<T>(), *s = scales.data_ptr<T>();
  const T *vm = viewmats.data_ptr<T>(), *k = Ks.data_ptr<T>();
  T *o_m2d = means2d.data_ptr<T>(), *o_con = conics.data_ptr<T>(), *o_dep = depths.data_ptr<T>();
  int32_t* o_rad = radii.data_ptr<int32_t>();
  T* o_nrm = want_normals ? normals.data_ptr<T>() : nullptr;

#pragma omp parallel for schedule(dynamic, 1024) if (N * C >= kParallelMinItems)
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t c = 0; c < C; ++c) {
      const Camera<T> cam = load_camera(vm + c * 16, k + c * 9);
      Projected<T> o;
      project_one(cam, m + n * 3, q + n * 4, s + n * 3, W, H, T(eps2d), T(near_plane), T(far_plane),
                  T(radius_clip), o);
      const int64_t cn = c * N + n;
      o_dep[cn] = o.p[2];
      if (!o.valid) {
        o_m2d[cn * 2] = o_m2d[cn * 2 + 1] = T(0);
        o_con[cn * 3] = o_con[cn * 3 + 1] = o_con[cn * 3 + 2] = T(0);
        o_rad[cn] = 0;
        if (o_nrm) o_nrm[cn * 3] = o_nrm[cn * 3 + 1] = o_nrm[cn * 3 + 2] = T(0);
        continue;
      }
      o_m2d[cn * 2] = o.mx;
      o_m2d[cn * 2 + 1] = o.my;
      o_con[cn * 3] = o.c / o.det;
      o_con[cn * 3 + 1] = -o.b / o.det;
      o_con[cn * 3 + 2] = o.a / o.det;
      // Radii beyond 2^30 px are clamped so the int32 stays meaningful; binning clamps to the tile grid anyway.
      o_rad[cn] = static_cast<int32_t>(std::min(o.radius, T(1 << 30)));
      if (o_nrm) {
        for (int i = 0; i < 3; ++i)
          o_nrm[cn * 3 + i] =
              o.flip * (cam.R[i * 3] * o.Rq[o.axis] + cam.R[i * 3 + 1] * o.Rq[3 + o.axis] +
                        cam.R[i * 3 + 2] * o.Rq[6 + o.axis]);
      }
    }
  }
}

template <typename T>
void project_backward_impl(const at::Tensor& means, const at::Tensor& quats, const at::Tensor& scales,
                           const at::Tensor& viewmats, const at::Tensor& Ks, int W, int H, double eps2d,
                           double near_plane, double far_plane, double radius_clip, const at::Tensor& g_means2d,
                           const at::Tensor& g_conics, const at::Tensor& g_depths,
                           const at::Tensor& g_normals, at::Tensor& d_means, at::Tensor& d_quats,
                           at::Tensor& d_scales) {
  const int64_t C = viewmats.size(0), N = means.size(0);
  const T *m = means.data_ptr<T>(), *q = quats.data_ptr<T>(), *s = scales.data_ptr<T>();
  const T *vm = viewmats.data_ptr<T>(), *k = Ks.data_ptr<T>();
  const T *gm2d = opt_ptr<T>(g_means2d), *gcon = opt_ptr<T>(g_conics), *gdep = opt_ptr<T>(g_depths),
          *gnrm = opt_ptr<T>(g_normals);
  T *dm = d_means.data_ptr<T>(), *dq = d_quats.data_ptr<T>(), *ds = d_scales.data_ptr<T>();

#pragma omp parallel for schedule(dynamic, 1024) if (N * C >= kParallelMinItems)
  for (int64_t n = 0; n < N; ++n) {
    T acc_m[3] = {0, 0, 0}, acc_q[4] = {0, 0, 0, 0}, acc_s[3] = {0, 0, 0};
    for (int64_t c = 0; c < C; ++c) {
      const Camera<T> cam = load_camera(vm + c * 16, k + c * 9);
      const int64_t cn = c * N + n;
      Projected<T> o;
      project_one(cam, m + n * 3, q + n * 4, s + n * 3, W, H, T(eps2d), T(near_plane), T(far_plane),
                  T(radius_clip), o);
      T gp[3] = {0, 0, gdep ? gdep[cn] : T(0)};  // depth = p.z for every Gaussian, culled or not
      if (o.valid) {
        const T z = o.p[2];
        const T fx = cam.fx, fy = cam.fy;
        // means2d = (fx px / z + cx, fy py / z + cy)
        const T gmx = gm2d ? gm2d[cn * 2] : T(0), gmy = gm2d ? gm2d[cn * 2 + 1] : T(0);
        gp[0] += fx / z * gmx;
        gp[1] += fy / z * gmy;
        gp[2] += -fx * o.p[0] / (z * z) * gmx - fy * o.p[1] / (z * z) * gmy;

        // conic = (c, -b, a) / det  ->  dL/d(a, b, c) of the 2D covariance (b: the single off-diagonal value)
        const T gca = gcon ? gcon[cn * 3] : T(0), gcb = gcon ? gcon[cn * 3 + 1] : T(0),
                gcc = gcon ? gcon[cn * 3 + 2] : T(0);
        const T id = T(1) / o.det, id2 = id * id;
        const T ga = gca * (-o.c * o.c * id2) + gcb * (o.b * o.c * id2) + gcc * (id - o.a * o.c * id2);
        const T gc = gca * (id - o.c * o.a * id2) + gcb * (o.b * o.a * id2) + gcc * (-o.a * o.a * id2);
        const T gb = gca * (T(2) * o.b * o.c * id2) + gcb * (-id - T(2) * o.b * o.b * id2) +
                     gcc * (T(2) * o.a * o.b * id2);
        // Symmetric matrix gradient of cov2d = J Sc J^T.
        const T G[4] = {ga, T(0.5) * gb, T(0.5) * gb, gc};
        // dL/dSc = J^T G J ; dL/dJ = 2 G J Sc
        T GJ[6];
        for (int i = 0; i < 2; ++i)
          for (int j = 0; j < 3; ++j) GJ[i * 3 + j] = G[i * 2] * o.J[j] + G[i * 2 + 1] * o.J[3 + j];
        T gSc[9];
        for (int i = 0; i < 3; ++i)
          for (int j = 0; j < 3; ++j) gSc[i * 3 + j] = o.J[i] * GJ[j] + o.J[3 + i] * GJ[3 + j];
        T gJ[6];
        for (int i = 0; i < 2; ++i)
          for (int j = 0; j < 3; ++j)
            gJ[i * 3 + j] =
                T(2) * (GJ[i * 3] * o.Sc[j] + GJ[i * 3 + 1] * o.Sc[3 + j] + GJ[i * 3 + 2] * o.Sc[6 + j]);
        // J = [[fx/z, 0, -fx tx/z^2], [0, fy/z, -fy ty/z^2]], tx = z clamp(px/z), ty = z clamp(py/z)
        const T z2 = z * z, z3 = z2 * z;
        const T gtx = -fx / z2 * gJ[2], gty = -fy / z2 * gJ[5];
        gp[2] += -fx / z2 * gJ[0] - fy / z2 * gJ[4] + T(2) * fx * o.tx / z3 * gJ[2] + T(2) * fy * o.ty / z3 * gJ[5];
        const T mask_x = (o.uc == o.u) ? T(1) : T(0), mask_y = (o.vc == o.v) ? T(1) : T(0);
        gp[0] += mask_x * gtx;
        gp[2] += (o.uc - mask_x * o.u) * gtx;
        gp[1] += mask_y * gty;
        gp[2] += (o.vc - mask_y * o.v) * gty;

        // Sc = R Sigma R^T  ->  dL/dSigma = R^T gSc R
        T tmp[9], gSig[9];
        for (int i = 0; i < 3; ++i)
          for (int j = 0; j < 3; ++j)
            tmp[i * 3 + j] = cam.R[i] * gSc[j] + cam.R[3 + i] * gSc[3 + j] + cam.R[6 + i] * gSc[6 + j];
        for (int i = 0; i < 3; ++i)
          for (int j = 0; j < 3; ++j)
            gSig[i * 3 + j] = tmp[i * 3] * cam.R[j] + tmp[i * 3 + 1] * cam.R[3 + j] + tmp[i * 3 + 2] * cam.R[6 + j];
        // Sigma = M M^T, M = Rq diag(s)  ->  dL/dM = (gSig + gSig^T) M
        T gRq[9];
        for (int i = 0; i < 3; ++i)
          for (int j = 0; j < 3; ++j) {
            T gM = T(0);
            for (int l = 0; l < 3; ++l) gM += (gSig[i * 3 + l] + gSig[l * 3 + i]) * o.M[l * 3 + j];
            acc_s[j] += gM * o.Rq[i * 3 + j];
            gRq[i * 3 + j] = gM * s[n * 3 + j];
          }
        // normal = flip * R Rq[:, axis]
        if (gnrm) {
          for (int i = 0; i < 3; ++i)
            gRq[i * 3 + o.axis] += o.flip * (cam.R[i] * gnrm[cn * 3] + cam.R[3 + i] * gnrm[cn * 3 + 1] +
                                             cam.R[6 + i] * gnrm[cn * 3 + 2]);
        }
        T gqn[4];
        rotmat_to_quat_backward(o.qn, gRq, gqn);
        const T dot = gqn[0] * o.qn[0] + gqn[1] * o.qn[1] + gqn[2] * o.qn[2] + gqn[3] * o.qn[3];
        for (int i = 0; i < 4; ++i) acc_q[i] += (gqn[i] - o.qn[i] * dot) / o.qnorm;
      }
      // p = R mean + t  ->  dL/dmean = R^T gp
      for (int j = 0; j < 3; ++j) acc_m[j] += cam.R[j] * gp[0] + cam.R[3 + j] * gp[1] + cam.R[6 + j] * gp[2];
    }
    for (int j = 0; j < 3; ++j) dm[n * 3 + j] = acc_m[j];
    for (int j = 0; j < 4; ++j) dq[n * 4 + j] = acc_q[j];
    for (int j = 0; j < 3; ++j) ds[n * 3 + j] = acc_s[j];
  }
}

}  // namespace

std::vector<at::Tensor> project_forward(const at::Tensor& means, const at::Tensor& quats,
                                           const at::Tensor& scales, const at::Tensor& viewmats,
                                           const at::Tensor& Ks, int64_t width, int64_t height, double eps2d,
                                           double near_plane, double far_plane, double radius_clip,
                                           bool want_normals) {
  check_project_inputs(means, quats, scales, viewmats, Ks);
  const int64_t C = viewmats.size(0), N = means.size(0);
  auto opts = means.options();
  auto means2d = at::empty({C, N, 2}, opts);
  auto conics = at::empty({C, N, 3}, opts);
  auto depths = at::empty({C, N}, opts);
  auto radii = at::empty({C, N}, opts.dtype(at::kInt));
  auto normals = want_normals ? at::empty({C, N, 3}, opts) : at::empty({0}, opts);
  AT_DISPATCH_FLOATING_TYPES(means.scalar_type(), "project_forward", [&] {
    project_forward_impl<scalar_t>(means, quats, scales, viewmats, Ks, int(width), int(height), eps2d, near_plane,
                                   far_plane, radius_clip, want_normals, means2d, conics, depths, radii, normals);
  });
  return {means2d, conics, depths, radii, normals};
}

std::vector<at::Tensor> project_backward(const at::Tensor& means, const at::Tensor& quats,
                                            const at::Tensor& scales, const at::Tensor& viewmats,
                                            const at::Tensor& Ks, int64_t width, int64_t height, double eps2d,
                                            double near_plane, double far_plane, double radius_clip,
                                            const at::Tensor& g_means2d, const at::Tensor& g_conics,
                                            const at::Tensor& g_depths, const at::Tensor& g_normals) {
  check_project_inputs(means, quats, scales, viewmats, Ks);
  check_project_grads("project_backward", means, {&g_means2d, &g_conics, &g_depths, &g_normals});
  auto d_means = at::empty_like(means), d_quats = at::empty_like(quats), d_scales = at::empty_like(scales);
  AT_DISPATCH_FLOATING_TYPES(means.scalar_type(), "project_backward", [&] {
    project_backward_impl<scalar_t>(means, quats, scales, viewmats, Ks, int(width), int(height), eps2d,
                                    near_plane, far_plane, radius_clip, g_means2d, g_conics, g_depths, g_normals,
                                    d_means, d_quats, d_scales);
  });
  return {d_means, d_quats, d_scales};
}

}  // namespace recon
