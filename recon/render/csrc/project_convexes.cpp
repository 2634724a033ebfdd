// Projection of smooth convexes (3DCS), forward and hand-written backward: the C++ twin of
// recon/render/convex.py::project_convexes (steps 1-5 and 7 of its docstring, which is the contract).
//
// Per camera c and convex n with points P_i: the centre mu = mean_i P_i, p = R mu + t, culled outside
// [near, far]; every point's image v_i (culled if one lies nearer than the near plane); the 2-D hull of the v_i
// by Andrew's monotone chain; its edges' lines (n, b) in the order of the normals' angle; a = z delta, s = z sigma;
// the half extents of the region the kernel reaches at opacity 1 and the screen radius. Discrete decisions (hull,
// order, culling, extents, radius) take no gradient; the camera is a constant.
//
// Everything here is scalar and compiled for the baseline target (no target clones), so no multiply-add is
// contracted: the hull predicates and the extents are the twin's float expressions, operation for operation.
#include "common.h"
#include "geometry.h"
#include "ops.h"

namespace recon {
namespace {

constexpr int kMaxPoints = 8;  // convex.py EDGES_MAX bounds K, so a hull has at most as many edges
constexpr int kEdges = 8;
constexpr int kPayload = 3 * kEdges + 5;  // lines, a, s, count, ext_x, ext_y
constexpr int kA = 3 * kEdges, kS = kA + 1, kCount = kA + 2, kExtX = kA + 3, kExtY = kA + 4;

template <typename T>
struct ConvexSettings {
  int W, H;
  T near_plane, far_plane, radius_clip, reach, radius_cull;
};

template <typename T>
struct ConvexProjected {
  T p[3], mx, my;
  T q[kMaxPoints][3], v[kMaxPoints][2];
  int count;                   // hull edges (0 where culled before the hull)
  int from[kEdges], to[kEdges];  // edge endpoints (point indices), in angle order
  T line[kEdges][3];           // (n.x, n.y, b)
  T ext_x, ext_y, radius;
  bool ok_points;              // centre in range and every point in front of the near plane
  bool visible;
};

// cross(a - o, b - o): positive when b lies to the left of o -> a in the twin's sense (hull_edges).
template <typename T>
inline T cross(const T* o, const T* a, const T* b) {
  return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]);
}

// Counter-clockwise hull (interior to the left) of v[0..K) as point indices, by Andrew's monotone chain with
// collinear points dropped; of equal points only the lowest index is a candidate, as in convex.py::hull_edges.
// Returns the number of vertices (< 3 when the points are all equal or collinear).
template <typename T>
int monotone_chain(const T (*v)[2], int K, int* hull) {
  int idx[kMaxPoints];
  int n = 0;
  for (int i = 0; i < K; ++i) {  // insertion sort by (x, y, index)
    int at = n++;
    while (at > 0) {
      const T* u = v[idx[at - 1]];
      if (u[0] < v[i][0] || (u[0] == v[i][0] && u[1] <= v[i][1])) break;
      idx[at] = idx[at - 1];
      --at;
    }
    idx[at] = i;
  }
  int m = 0;
  for (int k = 0; k < n; ++k) {  // equal points are adjacent now, the lowest index first
    if (m > 0 && v[idx[k]][0] == v[idx[m - 1]][0] && v[idx[k]][1] == v[idx[m - 1]][1]) continue;
    idx[m++] = idx[k];
  }
  if (m < 3) {
    for (int k = 0; k < m; ++k) hull[k] = idx[k];
    return m;
  }
  int h[2 * kMaxPoints];
  int size = 0;
  for (int k = 0; k < m; ++k) {  // lower chain, left to right
    while (size >= 2 && cross(v[h[size - 2]], v[h[size - 1]], v[idx[k]]) <= T(0)) --size;
    h[size++] = idx[k];
  }
  const int lower = size + 1;
  for (int k = m - 2; k >= 0; --k) {  // upper chain, right to left
    while (size >= lower && cross(v[h[size - 2]], v[h[size - 1]], v[idx[k]]) <= T(0)) --size;
    h[size++] = idx[k];
  }
  --size;  // the last point is the first
  for (int k = 0; k < size; ++k) hull[k] = h[k];
  return size;
}

// Whether the normal (nx, ny) has an angle atan2(ny, nx) in [-pi, 0): the twin sorts lines by that angle, and
// along a counter-clockwise hull the angles increase cyclically, so the sorted order is the hull's order started
// at the first edge of this half after one of the other half. ny = -0 with nx < 0 is atan2's -pi.
template <typename T>
inline bool lower_half(T nx, T ny) {
  return ny < T(0) || (ny == T(0) && std::signbit(ny) && nx < T(0));
}

// Half extents around (mx, my) of the hull moved out by tau = reach / (a s): convex.py::_reach, with the corners
// of consecutive lines; +inf where two are parallel, NaN where a corner is not finite (both culled).
template <typename T>
inline void reach_extents(ConvexProjected<T>& o, T as, T reach) {
  const T tau = (T(1) / std::max(as, T(1e-30))) * reach;  // the twin's REACH / x is x.reciprocal() * REACH
  T ex = T(0), ey = T(0);
  for (int k = 0; k < o.count; ++k) {
    const T *l1 = o.line[k], *l2 = o.line[(k + 1) % o.count];
    const T det = l1[0] * l2[1] - l1[1] * l2[0];
    if (det == T(0)) {
      o.ext_x = o.ext_y = std::numeric_limits<T>::infinity();
      return;
    }
    const T r1 = tau - l1[2], r2 = tau - l2[2];
    const T x = (r1 * l2[1] - l1[1] * r2) / det;
    const T y = (l1[0] * r2 - r1 * l2[0]) / det;
    const T dx = std::abs(x - o.mx), dy = std::abs(y - o.my);
    if (!std::isfinite(dx) || !std::isfinite(dy)) {
      o.ext_x = o.ext_y = std::numeric_limits<T>::quiet_NaN();
      return;
    }
    ex = std::max(ex, dx);
    ey = std::max(ey, dy);
  }
  o.ext_x = ex;
  o.ext_y = ey;
}

// Hull edges in angle order and their lines (steps 3 and 4).
template <typename T>
inline void hull_lines(ConvexProjected<T>& o, int K) {
  int hull[kMaxPoints];
  const int nv = monotone_chain<T>(o.v, K, hull);
  o.count = nv >= 3 ? nv : (nv == 2 ? 2 : 0);  // two distinct points: the twin's two opposite edges
  if (nv < 3) return;
  int start = 0;
  for (int k = 0; k < nv; ++k) {
    const T *vi = o.v[hull[k]], *vj = o.v[hull[(k + 1) % nv]];
    const T *vh = o.v[hull[(k + nv - 1) % nv]];
    const bool here = lower_half(vj[1] - vi[1], -(vj[0] - vi[0]));
    const bool before = lower_half(vi[1] - vh[1], -(vi[0] - vh[0]));
    if (here && !before) start = k;
  }
  for (int k = 0; k < nv; ++k) {
    const int i = hull[(start + k) % nv], j = hull[(start + k + 1) % nv];
    const T *vi = o.v[i], *vj = o.v[j];
    const T nx = vj[1] - vi[1];
    const T ny = -(vj[0] - vi[0]);
    o.from[k] = i;
    o.to[k] = j;
    o.line[k][0] = nx;
    o.line[k][1] = ny;
    o.line[k][2] = -(nx * vi[0] + ny * vi[1]);
  }
}

template <typename T>
inline void project_convex(const Camera<T>& cam, const T* P, int K, T delta, T sigma, const ConvexSettings<T>& st,
                           ConvexProjected<T>& o) {
  // 1. the centre
  T mu[3] = {0, 0, 0};
  for (int i = 0; i < K; ++i)
    for (int j = 0; j < 3; ++j) mu[j] += P[i * 3 + j];
  for (int j = 0; j < 3; ++j) mu[j] /= T(K);
  for (int i = 0; i < 3; ++i)
    o.p[i] = cam.R[i * 3] * mu[0] + cam.R[i * 3 + 1] * mu[1] + cam.R[i * 3 + 2] * mu[2] + cam.t[i];
  const T z = o.p[2];
  const bool in_range = z >= st.near_plane && z <= st.far_plane && z != T(0);
  const T zs = in_range ? z : T(1);
  o.mx = cam.fx * o.p[0] / zs + cam.cx;
  o.my = cam.fy * o.p[1] / zs + cam.cy;
  // 2. every point
  bool qz_ok = true;
  for (int i = 0; i < K; ++i) {
    const T* Pi = P + i * 3;
    for (int r = 0; r < 3; ++r)
      o.q[i][r] = cam.R[r * 3] * Pi[0] + cam.R[r * 3 + 1] * Pi[1] + cam.R[r * 3 + 2] * Pi[2] + cam.t[r];
    qz_ok = qz_ok && o.q[i][2] >= st.near_plane;
  }
  o.ok_points = in_range && qz_ok;
  o.visible = false;
  o.radius = T(0);
  o.count = 0;
  if (!o.ok_points) return;
  for (int i = 0; i < K; ++i) {
    o.v[i][0] = cam.fx * o.q[i][0] / o.q[i][2] + cam.cx;
    o.v[i][1] = cam.fy * o.q[i][1] / o.q[i][2] + cam.cy;
  }
  // 3, 4. hull lines in angle order
  hull_lines(o, K);
  if (o.count < 3) return;
  // 7. reach, radius, culling
  reach_extents(o, (z * delta) * (z * sigma), st.reach);
  if (!std::isfinite(o.ext_x) || !std::isfinite(o.ext_y)) return;
  const T r = std::ceil(std::max(o.ext_x, o.ext_y));
  if (!(r <= st.radius_cull)) return;
  const bool on_image = (o.mx + r > T(0)) && (o.mx - r < T(st.W)) && (o.my + r > T(0)) && (o.my - r < T(st.H));
  o.visible = r > st.radius_clip && on_image;
  o.radius = o.visible ? r : T(0);
}

template <typename T>
struct Inputs {
  const T *P, *delta, *sigma, *vm, *Ks;
  int64_t C, N;
  int K;
};

template <typename T>
Inputs<T> inputs(const at::Tensor& points, const at::Tensor& delta, const at::Tensor& sigma,
                 const at::Tensor& viewmats, const at::Tensor& Ks) {
  return {points.data_ptr<T>(), delta.data_ptr<T>(), sigma.data_ptr<T>(), viewmats.data_ptr<T>(),
          Ks.data_ptr<T>(),     viewmats.size(0),    points.size(0),      int(points.size(1))};
}

template <typename T>
void forward_impl(const Inputs<T>& in, const ConvexSettings<T>& st, at::Tensor& means2d, at::Tensor& payload,
                  at::Tensor& depths, at::Tensor& radii) {
  T *o2d = means2d.data_ptr<T>(), *opl = payload.data_ptr<T>(), *odep = depths.data_ptr<T>();
  int32_t* orad = radii.data_ptr<int32_t>();
  const int64_t C = in.C, N = in.N;
  const int K = in.K;
#pragma omp parallel for schedule(dynamic, 1024) if (N * C >= kParallelMinItems)
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t c = 0; c < C; ++c) {
      const Camera<T> cam = load_camera(in.vm + c * 16, in.Ks + c * 9);
      ConvexProjected<T> o;
      project_convex(cam, in.P + n * K * 3, K, in.delta[n], in.sigma[n], st, o);
      const int64_t cn = c * N + n;
      T* pl = opl + cn * kPayload;
      std::fill(pl, pl + kPayload, T(0));
      o2d[cn * 2] = o.visible ? o.mx : T(0);
      o2d[cn * 2 + 1] = o.visible ? o.my : T(0);
      odep[cn] = o.p[2];
      orad[cn] = int32_t(o.radius);
      if (!o.visible) continue;
      for (int k = 0; k < o.count; ++k)
        for (int r = 0; r < 3; ++r) pl[3 * k + r] = o.line[k][r];
      pl[kA] = o.p[2] * in.delta[n];
      pl[kS] = o.p[2] * in.sigma[n];
      pl[kCount] = T(o.count);
      pl[kExtX] = o.ext_x;
      pl[kExtY] = o.ext_y;
    }
  }
}

// dL/d(image points) of the visible convex's lines: n = (vj.y - vi.y, -(vj.x - vi.x)), b = -(n . vi).
template <typename T>
inline void lines_backward(const ConvexProjected<T>& o, const T* g, T (*gv)[2]) {
  for (int k = 0; k < o.count; ++k) {
    const T* vi = o.v[o.from[k]];
    const T nx = o.line[k][0], ny = o.line[k][1];
    const T gnx = g[3 * k] - g[3 * k + 2] * vi[0];
    const T gny = g[3 * k + 1] - g[3 * k + 2] * vi[1];
    T* gi = gv[o.from[k]];
    T* gj = gv[o.to[k]];
    gj[1] += gnx;
    gi[1] -= gnx;
    gj[0] -= gny;
    gi[0] += gny;
    gi[0] -= g[3 * k + 2] * nx;
    gi[1] -= g[3 * k + 2] * ny;
  }
}

template <typename T>
void backward_impl(const Inputs<T>& in, const ConvexSettings<T>& st, const T* gm2d, const T* gpl, const T* gdep,
                   T* d_points, T* d_delta, T* d_sigma) {
  const int64_t C = in.C, N = in.N;
  const int K = in.K;
#pragma omp parallel for schedule(dynamic, 1024) if (N * C >= kParallelMinItems)
  for (int64_t n = 0; n < N; ++n) {
    T* dP = d_points + n * K * 3;
    std::fill(dP, dP + K * 3, T(0));
    T acc_delta = T(0), acc_sigma = T(0);
    for (int64_t c = 0; c < C; ++c) {
      const Camera<T> cam = load_camera(in.vm + c * 16, in.Ks + c * 9);
      ConvexProjected<T> o;
      project_convex(cam, in.P + n * K * 3, K, in.delta[n], in.sigma[n], st, o);
      const int64_t cn = c * N + n;
      const T z = o.p[2];
      T gp[3] = {0, 0, gdep ? gdep[cn] : T(0)};  // depths = z everywhere, culled or not
      if (o.visible && gm2d) {                  // means2d = (fx p.x / z + cx, fy p.y / z + cy), zero where culled
        const T gmx = gm2d[cn * 2], gmy = gm2d[cn * 2 + 1];
        gp[0] += cam.fx / z * gmx;
        gp[1] += cam.fy / z * gmy;
        gp[2] += -cam.fx * o.p[0] / (z * z) * gmx - cam.fy * o.p[1] / (z * z) * gmy;
      }
      if (o.visible && gpl) {  // the payload is zero where culled
        const T* g = gpl + cn * kPayload;
        gp[2] += g[kA] * in.delta[n] + g[kS] * in.sigma[n];
        acc_delta += g[kA] * z;
        acc_sigma += g[kS] * z;
        T gv[kMaxPoints][2] = {};
        lines_backward(o, g, gv);
        for (int i = 0; i < K; ++i) {  // v = (fx q.x / q.z + cx, fy q.y / q.z + cy), then q = R P + t
          const T qz = o.q[i][2];
          const T gq[3] = {cam.fx / qz * gv[i][0], cam.fy / qz * gv[i][1],
                           -(cam.fx * o.q[i][0] * gv[i][0] + cam.fy * o.q[i][1] * gv[i][1]) / (qz * qz)};
          for (int j = 0; j < 3; ++j)
            dP[i * 3 + j] += cam.R[j] * gq[0] + cam.R[3 + j] * gq[1] + cam.R[6 + j] * gq[2];
        }
      }
      // p = R mu + t with mu the mean of the points
      for (int j = 0; j < 3; ++j) {
        const T gmu = (cam.R[j] * gp[0] + cam.R[3 + j] * gp[1] + cam.R[6 + j] * gp[2]) / T(K);
        for (int i = 0; i < K; ++i) dP[i * 3 + j] += gmu;
      }
    }
    d_delta[n] = acc_delta;
    d_sigma[n] = acc_sigma;
  }
}

void check_convex_inputs(const at::Tensor& points, const at::Tensor& delta, const at::Tensor& sigma,
                         const at::Tensor& viewmats, const at::Tensor& Ks) {
  check_project_inputs(points, delta, sigma, viewmats, Ks);
  const int64_t N = points.size(0);
  TORCH_CHECK(points.dim() == 3 && points.size(2) == 3 && points.size(1) >= 3 && points.size(1) <= kMaxPoints,
              "project_convexes: points must be [N,K,3] with 3 <= K <= ", kMaxPoints);
  TORCH_CHECK(delta.dim() == 1 && delta.size(0) == N && sigma.dim() == 1 && sigma.size(0) == N,
              "project_convexes: delta and sigma must be [N]");
}

template <typename T>
ConvexSettings<T> settings(int64_t width, int64_t height, double near_plane, double far_plane, double radius_clip,
                           double reach, double radius_cull) {
  return {int(width),     int(height), T(near_plane), T(far_plane), T(radius_clip),
          T(reach),       T(radius_cull)};
}

}  // namespace

// Returns {means2d [C,N,2], payload [C,N,29], depths [C,N], radii [C,N] int32, normals (empty)}. `reach` is
// log(1/alpha_min - 1) and `radius_cull` the largest screen radius kept (convex.py REACH, RADIUS_CULL).
std::vector<at::Tensor> project_convexes_forward(const at::Tensor& points, const at::Tensor& delta,
                                                 const at::Tensor& sigma, const at::Tensor& viewmats,
                                                 const at::Tensor& Ks, int64_t width, int64_t height,
                                                 double near_plane, double far_plane, double radius_clip,
                                                 double reach, double radius_cull, bool want_normals) {
  check_convex_inputs(points, delta, sigma, viewmats, Ks);
  TORCH_CHECK(!want_normals, "project_convexes: convexes render no normal map");
  const int64_t C = viewmats.size(0), N = points.size(0);
  auto opts = points.options();
  auto means2d = at::empty({C, N, 2}, opts);
  auto payload = at::empty({C, N, kPayload}, opts);
  auto depths = at::empty({C, N}, opts);
  auto radii = at::empty({C, N}, opts.dtype(at::kInt));
  AT_DISPATCH_FLOATING_TYPES(points.scalar_type(), "project_convexes_forward", [&] {
    using T = scalar_t;
    forward_impl<T>(inputs<T>(points, delta, sigma, viewmats, Ks),
                    settings<T>(width, height, near_plane, far_plane, radius_clip, reach, radius_cull), means2d,
                    payload, depths, radii);
  });
  return {means2d, payload, depths, radii, at::empty({0}, opts)};
}

// Returns {d points [N,K,3], d delta [N], d sigma [N]}; empty gradients count as zero (g_normals must be).
std::vector<at::Tensor> project_convexes_backward(const at::Tensor& points, const at::Tensor& delta,
                                                  const at::Tensor& sigma, const at::Tensor& viewmats,
                                                  const at::Tensor& Ks, int64_t width, int64_t height,
                                                  double near_plane, double far_plane, double radius_clip,
                                                  double reach, double radius_cull, const at::Tensor& g_means2d,
                                                  const at::Tensor& g_payload, const at::Tensor& g_depths,
                                                  const at::Tensor& g_normals) {
  check_convex_inputs(points, delta, sigma, viewmats, Ks);
  check_project_grads("project_convexes_backward", points, {&g_means2d, &g_payload, &g_depths, &g_normals});
  TORCH_CHECK(g_normals.numel() == 0, "project_convexes_backward: convexes have no normals");
  TORCH_CHECK(g_payload.numel() == 0 || g_payload.size(-1) == kPayload, "project_convexes_backward: payload size");
  auto d_points = at::empty_like(points), d_delta = at::empty_like(delta), d_sigma = at::empty_like(sigma);
  AT_DISPATCH_FLOATING_TYPES(points.scalar_type(), "project_convexes_backward", [&] {
    using T = scalar_t;
    backward_impl<T>(inputs<T>(points, delta, sigma, viewmats, Ks),
                     settings<T>(width, height, near_plane, far_plane, radius_clip, reach, radius_cull),
                     opt_ptr<T>(g_means2d), opt_ptr<T>(g_payload), opt_ptr<T>(g_depths), d_points.data_ptr<T>(),
                     d_delta.data_ptr<T>(), d_sigma.data_ptr<T>());
  });
  return {d_points, d_delta, d_sigma};
}

}  // namespace recon
