// Per-pixel kernels of the primitives that share the tile compositor (DESIGN.md §3, METHODS.md §2.3).
//
// A kernel policy K<T> has an id K::kId (the kernel id the Python primitive descriptor passes to every entry point;
// never inferred from the payload size) and supplies, for one primitive with screen centre (mx, my), centre depth z
// and a payload of K::kPayload numbers:
//   prepare(mx, my, z, payload, kmin, prim, ext_x, ext_y): once per (primitive, tile); false if the primitive can
//       never reach a kernel value of kmin (= alpha_min / opacity); otherwise fills `prim` and a conservative
//       half-extent in pixels of the region where it may, so the compositor visits only those pixels;
//   eval(prim, px, py, ok, zp): kernel values in [0, 1] at Simd<T>::W pixel centres, `ok` false on lanes to skip,
//       and the depth the maps use at those pixels (z itself unless K::kPixelDepth; always finite);
//   backward(prim, px, py, m, k, dL_dk, dL_dzp, d_mx, d_my, g_payload, g_z): on the lanes of m, dL/d(mx, my) into
//       d_mx, d_my (the compositor also sums their absolute values for densification), dL/d(payload) added to
//       g_payload[P] and dL/dz to g_z; lanes outside m contribute exactly zero.
// Binning, sorting, compositing, every auxiliary map and the backward walk are written once in rasterize.cpp and
// templated on the policy.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "simd.h"

namespace recon {

template <typename T>
struct GaussianKernel {
  using S = Simd<T>;
  using V = typename S::V;
  using M = typename S::M;

  // Kernel id (the Python descriptor passes it explicitly; recon/render/primitives.py).
  static constexpr int kId = 0;
  // Payload: the conic (inverse of the 2D covariance) as (a, b, c) = [[a, b], [b, c]].
  static constexpr int kPayload = 3;
  static constexpr bool kPixelDepth = false;

  struct Prim {
    T mx, my, z, a, b, c, sigma_cut;
  };

  static RECON_INLINE bool prepare(T mx, T my, T z, const T* payload, T kmin, Prim& g, T& ext_x, T& ext_y) {
    if (!(kmin < T(1))) return false;  // opacity below alpha_min (or zero, or NaN): never composited
    g.mx = mx;
    g.my = my;
    g.z = z;
    g.a = payload[0];
    g.b = payload[1];
    g.c = payload[2];
    const T det = g.a * g.c - g.b * g.b;
    if (!(det > T(0)) || !(g.a > T(0))) return false;
    // exp(-sigma) >= kmin  <=>  sigma <= -log(kmin); the margin keeps the cut conservative under rounding, the
    // compositor still applies the exact alpha >= alpha_min test.
    g.sigma_cut = -std::log(kmin) * T(1.0001) + T(1e-3);
    ext_x = std::sqrt(T(2) * g.sigma_cut * g.c / det) + T(1e-3);
    ext_y = std::sqrt(T(2) * g.sigma_cut * g.a / det) + T(1e-3);
    return std::isfinite(ext_x) && std::isfinite(ext_y);
  }

  // sigma = 1/2 (a dx^2 + c dy^2) + b dx dy with d = centre - pixel; skipped where sigma < 0 or past the cut.
  static RECON_INLINE V eval(const Prim& g, V px, V py, M& ok, V& zp) {
    const V dx = g.mx - px;
    const V dy = g.my - py;
    const V s = T(0.5) * (g.a * dx * dx + g.c * dy * dy) + g.b * dx * dy;
    ok = (s >= T(0)) & (s <= g.sigma_cut);
    zp = S::splat(g.z);
    return S::exp(-s);
  }

  static RECON_INLINE void backward(const Prim& g, V px, V py, M /*m*/, V k, V dL_dk, V dL_dzp, V& d_mx, V& d_my,
                                    V* g_payload, V& g_z) {
    const V dx = g.mx - px;
    const V dy = g.my - py;
    const V dL_ds = -k * dL_dk;  // d exp(-sigma) / d sigma = -exp(-sigma)
    d_mx = dL_ds * (g.a * dx + g.b * dy);
    d_my = dL_ds * (g.b * dx + g.c * dy);
    g_payload[0] += dL_ds * T(0.5) * dx * dx;
    g_payload[1] += dL_ds * dx * dy;
    g_payload[2] += dL_ds * T(0.5) * dy * dy;
    g_z += dL_dzp;
  }
};

// 2D Gaussian surfel (2DGS), semantics in recon/render/surfels.py. Payload: the camera-space tangent axes mapped
// by K, (K a_u, K a_v); with the centre's homogeneous image point c = (mx z, my z, z) they form the map
// h(u, v) = u K a_u + v K a_v + c from the surfel's plane to the image, whose rows are Tu, Tv, Tw. A pixel's
// ray meets the plane at (u, v) = (s.x, s.y) / s.z, s = (px Tw - Tu) x (py Tw - Tv); the kernel is
// exp(-rho / 2) with rho = min(u^2 + v^2, 2 |p - m|^2) (the screen-space low-pass), and the depth there is
// u a_u.z + v a_v.z + z where the plane term wins, else z.
template <typename T>
struct SurfelKernel {
  using S = Simd<T>;
  using V = typename S::V;
  using M = typename S::M;

  static constexpr int kId = 1;  // recon/render/primitives.py
  static constexpr int kPayload = 6;
  static constexpr bool kPixelDepth = true;

  struct Prim {
    T mx, my, z, kux, kuy, kuz, kvx, kvy, kvz, rho_cut;
  };

  static RECON_INLINE bool prepare(T mx, T my, T z, const T* q, T kmin, Prim& g, T& ext_x, T& ext_y) {
    if (!(kmin < T(1))) return false;
    g.mx = mx;
    g.my = my;
    g.z = z;
    g.kux = q[0];
    g.kuy = q[1];
    g.kuz = q[2];
    g.kvx = q[3];
    g.kvy = q[4];
    g.kvz = q[5];
    g.rho_cut = T(2) * (-std::log(kmin) * T(1.0001) + T(1e-3));
    // Low-pass disc 2 |d|^2 <= rho_cut, and the bounding box of the plane's ellipse u^2 + v^2 <= rho_cut from
    // the dual conic C* = M diag(1, 1, -1/rho_cut) M^T (unbounded, so the whole tile, when C*33 >= 0).
    const T r_lp = std::sqrt(T(0.5) * g.rho_cut);
    const T inv = T(1) / g.rho_cut;
    const T cx = mx * z, cy = my * z;
    const T c33 = g.kuz * g.kuz + g.kvz * g.kvz - z * z * inv;
    T ex = r_lp, ey = r_lp;
    if (c33 < T(0)) {
      const T c11 = g.kux * g.kux + g.kvx * g.kvx - cx * cx * inv;
      const T c22 = g.kuy * g.kuy + g.kvy * g.kvy - cy * cy * inv;
      const T c13 = g.kux * g.kuz + g.kvx * g.kvz - cx * z * inv;
      const T c23 = g.kuy * g.kuz + g.kvy * g.kvz - cy * z * inv;
      const T ox = c13 / c33, oy = c23 / c33;
      const T hx = std::sqrt(std::max(T(0), ox * ox - c11 / c33));
      const T hy = std::sqrt(std::max(T(0), oy * oy - c22 / c33));
      ex = std::max(ex, std::abs(ox - mx) + hx);
      ey = std::max(ey, std::abs(oy - my) + hy);
      ex += T(1e-3) + T(1e-4) * ex;
      ey += T(1e-3) + T(1e-4) * ey;
      if (!std::isfinite(ex) || !std::isfinite(ey)) ex = ey = T(1e7);
    } else {
      ex = ey = T(1e7);  // the compositor clips the footprint to the tile
    }
    ext_x = ex;
    ext_y = ey;
    return true;
  }

  // Shared by eval and backward: the plane intersection and which term of the min wins.
  struct At {
    V hux, huy, huz, hvx, hvy, hvz, sx, sy, sz, u, v, rho3, rho2, dx, dy;
    M use3;
  };

  static RECON_INLINE At intersect(const Prim& g, V px, V py) {
    At a;
    a.dx = px - g.mx;
    a.dy = py - g.my;
    a.hux = px * g.kuz - g.kux;
    a.huy = px * g.kvz - g.kvx;
    a.huz = a.dx * g.z;
    a.hvx = py * g.kuz - g.kuy;
    a.hvy = py * g.kvz - g.kvy;
    a.hvz = a.dy * g.z;
    a.sx = a.huy * a.hvz - a.huz * a.hvy;
    a.sy = a.huz * a.hvx - a.hux * a.hvz;
    a.sz = a.hux * a.hvy - a.huy * a.hvx;
    const M nz = a.sz != T(0);
    const V rz = T(1) / S::select(nz, a.sz, S::splat(T(1)));  // one division for both coordinates
    a.u = a.sx * rz;
    a.v = a.sy * rz;
    a.rho3 = a.u * a.u + a.v * a.v;
    a.rho2 = T(2) * (a.dx * a.dx + a.dy * a.dy);
    a.use3 = nz & (a.rho3 <= a.rho2);  // false where rho3 is NaN or infinite
    return a;
  }

  static RECON_INLINE V eval(const Prim& g, V px, V py, M& ok, V& zp) {
    const At a = intersect(g, px, py);
    const V rho = S::select(a.use3, a.rho3, a.rho2);
    ok = rho <= g.rho_cut;
    zp = S::select(a.use3, a.u * g.kuz + a.v * g.kvz + g.z, S::splat(g.z));
    return S::exp(T(-0.5) * rho);
  }

  static RECON_INLINE void backward(const Prim& g, V px, V py, M m, V k, V dL_dk, V dL_dzp, V& d_mx, V& d_my,
                                    V* gp, V& g_z) {
    const V zero = S::splat(T(0));
    const At a = intersect(g, px, py);
    const M m3 = m & a.use3, m2 = m & ~a.use3;
    const V dL_drho = T(-0.5) * k * dL_dk;
    // Low-pass branch: rho = 2 |p - m|^2, depth z.
    const V g2 = S::select(m2, dL_drho, zero);
    d_mx = T(-4) * g2 * a.dx;
    d_my = T(-4) * g2 * a.dy;
    g_z += S::select(m, dL_dzp, zero);
    // Plane branch: rho = u^2 + v^2, depth u kuz + v kvz + z.
    const V gr = S::select(m3, dL_drho, zero), gzp = S::select(m3, dL_dzp, zero);
    const V u = S::select(m3, a.u, zero), v = S::select(m3, a.v, zero);
    const V rz = T(1) / S::select(m3, a.sz, S::splat(T(1)));
    const V gu = T(2) * gr * u + gzp * g.kuz;
    const V gv = T(2) * gr * v + gzp * g.kvz;
    gp[2] += gzp * u;
    gp[5] += gzp * v;
    const V gsx = gu * rz, gsy = gv * rz, gsz = -(gu * u + gv * v) * rz;
    // s = hu x hv: dL/dhu = hv x gs, dL/dhv = gs x hu.
    const V ghux = a.hvy * gsz - a.hvz * gsy, ghuy = a.hvz * gsx - a.hvx * gsz, ghuz = a.hvx * gsy - a.hvy * gsx;
    const V ghvx = gsy * a.huz - gsz * a.huy, ghvy = gsz * a.hux - gsx * a.huz, ghvz = gsx * a.huy - gsy * a.hux;
    // hu = (px kuz - kux, px kvz - kvx, (px - mx) z), hv = (py kuz - kuy, py kvz - kvy, (py - my) z).
    gp[0] -= ghux;
    gp[3] -= ghuy;
    gp[1] -= ghvx;
    gp[4] -= ghvy;
    gp[2] += px * ghux + py * ghvx;
    gp[5] += px * ghuy + py * ghvy;
    d_mx -= g.z * ghuz;
    d_my -= g.z * ghvz;
    g_z += a.dx * ghuz + a.dy * ghvz;
  }
};

// Smooth convex (3DCS), semantics in recon/render/convex.py. Payload: up to kEdges hull lines (n.x, n.y, b) in the
// order of their normals' angle (zeros past the count), then a = z delta, s = z sigma, the edge count and the half
// extents (ext_x, ext_y) of the region the kernel can reach at opacity 1. With d_k(p) = n_k . p + b_k (negative
// inside), phi = LSE_k(a d_k) = a m + log sum_k exp(a (d_k - m)), m = max_k d_k, and the kernel is
// C = sigmoid(-s phi). The centre (mx, my) only places the footprint: it takes no gradient from the kernel.
template <typename T>
struct ConvexKernel {
  using S = Simd<T>;
  using V = typename S::V;
  using M = typename S::M;

  static constexpr int kId = 2;     // recon/render/primitives.py
  static constexpr int kEdges = 8;  // convex.py EDGES_MAX
  static constexpr int kA = 3 * kEdges, kS = kA + 1, kCount = kA + 2, kExtX = kA + 3, kExtY = kA + 4;
  static constexpr int kPayload = kA + 5;
  static constexpr bool kPixelDepth = false;
  // In float, a term exp(a (d_k - m)) below exp(-20) changes no bit of a sum that is >= 1 (the max term is 1, and
  // eight terms of 2e-9 stay below half an ulp of 1), so a line whose terms are all below it on a vector of pixels
  // is skipped. The float64 path sums every term.
  static constexpr bool kSkipNegligible = std::is_same_v<T, float>;
  static constexpr T kNegligible = T(20);

  struct Prim {
    T nx[kEdges], ny[kEdges], b[kEdges];
    T a, s, z;
    T span;  // a line is skipped where d_k < m - span on every lane: kNegligible / a (float), +inf (double)
    T tau;   // every composited pixel has d_k <= tau for all k (see bound); +inf when unknown
    T inx[kEdges];  // 1 / n_k.x for the lines that bound rows (row_span), 0 for nearly horizontal ones
    int count;
  };

  // Per (primitive, tile): the lines and constants, and the stored extents (a bound at opacity 1) with a margin for
  // rounding; the compositor clips them by bound(), computed once per primitive.
  static RECON_INLINE bool prepare(T /*mx*/, T /*my*/, T z, const T* q, T kmin, Prim& g, T& ext_x, T& ext_y) {
    if (!(kmin < T(1)) || !(q[kCount] >= T(3) && q[kCount] <= T(kEdges))) return false;
    g.count = int(q[kCount]);
    for (int k = 0; k < g.count; ++k) {
      g.nx[k] = q[3 * k];
      g.ny[k] = q[3 * k + 1];
      g.b[k] = q[3 * k + 2];
    }
    g.a = q[kA];
    g.s = q[kS];
    g.z = z;
    g.span = kSkipNegligible && g.a > T(0) ? kNegligible / g.a : std::numeric_limits<T>::infinity();
    g.tau = reach_tau(g, kmin);
    for (int k = 0; k < g.count; ++k) {
      // a line within ~3 degrees of horizontal bounds rows, not columns: its x-bound would be at the mercy of
      // rounding, so it is left to the box
      const bool steep = std::abs(g.nx[k]) >= T(0.05) * (std::abs(g.nx[k]) + std::abs(g.ny[k]));
      g.inx[k] = steep ? T(1) / g.nx[k] : T(0);
    }
    ext_x = q[kExtX] + T(1e-3) + T(1e-4) * q[kExtX];
    ext_y = q[kExtY] + T(1e-3) + T(1e-4) * q[kExtY];
    return std::isfinite(ext_x) && std::isfinite(ext_y);
  }

  // tau = log(1/kmin - 1) / (a s): C >= kmin needs s phi <= log(1/kmin - 1) and phi >= a max_k d_k, so every
  // pixel the kernel composites has d_k <= tau for all k (convex.py step 7 at this opacity); +inf where that says
  // nothing useful (tau <= 0: the hull moved inwards, where edges can vanish).
  static RECON_INLINE T reach_tau(const Prim& g, T kmin) {
    const T reach = std::log(T(1) / kmin - T(1));
    const T as = g.a * g.s;
    const T tau = reach / as;
    return reach > T(0) && as > T(0) && std::isfinite(tau) ? tau : std::numeric_limits<T>::infinity();
  }

  // The pixel centres x of row py that may reach kmin: [lo, hi] from the lines that bound rows, with a margin for
  // rounding (x-bounds err by about eps |b| / |n.x| <= 20 eps |v| pixels); false when the row is outside.
  static RECON_INLINE bool row_span(const Prim& g, T py, T& lo, T& hi) {
    lo = -std::numeric_limits<T>::infinity();
    hi = std::numeric_limits<T>::infinity();
    if (!(g.tau < std::numeric_limits<T>::infinity())) return true;
    for (int k = 0; k < g.count; ++k) {
      if (g.inx[k] == T(0)) continue;
      const T x = (g.tau - g.b[k] - g.ny[k] * py) * g.inx[k];
      if (g.nx[k] > T(0))
        hi = std::min(hi, x);
      else
        lo = std::max(lo, x);
    }
    const T margin = T(0.05) + T(1e-5) * std::max(std::abs(lo), std::abs(hi));
    lo -= margin;
    hi += margin;
    return !(lo > hi);
  }

  // Per primitive: the box of the region the kernel can reach at kmin = alpha_min / opacity, the polygon
  // {d_k <= tau for all k} (reach_tau). Its exact vertices: a short edge's line moves
  // out by tau / |n_k| pixels, far beyond its neighbours' corner, and then bounds nothing; the stored extents
  // (consecutive lines only) keep the far corners, which on 3DCS's initial convexes inflates the box several
  // times. Dropping a line only enlarges the polygon, so every step stays conservative; tau <= 0 (moved inwards,
  // where edges can vanish) keeps the stored extents.
  static RECON_INLINE bool bound(T mx, T my, T z, const T* q, T kmin, T& ext_x, T& ext_y) {
    Prim g;
    if (!prepare(mx, my, z, q, kmin, g, ext_x, ext_y)) return false;
    const T tau = g.tau;
    if (!(tau < std::numeric_limits<T>::infinity())) return true;
    int line[kEdges];  // the lines still bounding the polygon, in angle order
    T rhs[kEdges];     // n_k . p <= rhs_k
    int n = g.count;
    for (int k = 0; k < n; ++k) {
      line[k] = k;
      rhs[k] = tau - g.b[k];
    }
    T x, y;
    // A line is redundant when its neighbours turn by less than pi and their corner already satisfies it: the
    // neighbours' wedge then lies inside its half-plane. Three lines with turns below pi are all needed.
    for (bool dropped = true; dropped && n > 3;) {
      dropped = false;
      for (int i = 0; i < n && !dropped; ++i) {
        const int k = line[i];
        if (corner(g, rhs, line[(i + n - 1) % n], line[(i + 1) % n], x, y) &&
            g.nx[k] * x + g.ny[k] * y <= rhs[k]) {
          for (int j = i; j + 1 < n; ++j) line[j] = line[j + 1];
          --n;
          dropped = true;
        }
      }
    }
    T ex = T(0), ey = T(0);
    for (int i = 0; i < n; ++i) {
      if (!corner(g, rhs, line[i], line[(i + 1) % n], x, y)) return true;  // turn >= pi: keep the stored box
      ex = std::max(ex, std::abs(x - mx));
      ey = std::max(ey, std::abs(y - my));
    }
    if (std::isfinite(ex) && std::isfinite(ey)) {
      ext_x = std::min(ext_x, ex + T(1e-3) + T(1e-4) * ex);
      ext_y = std::min(ext_y, ey + T(1e-3) + T(1e-4) * ey);
    }
    return true;
  }

  // The corner of lines j then k (k's normal turned counter-clockwise from j's by less than pi); false otherwise.
  static RECON_INLINE bool corner(const Prim& g, const T* rhs, int j, int k, T& x, T& y) {
    const T det = g.nx[j] * g.ny[k] - g.ny[j] * g.nx[k];
    if (!(det > T(0))) return false;
    const T inv = T(1) / det;
    x = (rhs[j] * g.ny[k] - g.ny[j] * rhs[k]) * inv;
    y = (g.nx[j] * rhs[k] - rhs[j] * g.nx[k]) * inv;
    return true;
  }

  // The line values d_k and their max at W pixels; N = the edge count, a constant so the loops unroll.
  template <int N>
  static RECON_INLINE V lines(const Prim& g, V px, V py, V* d) {
    V m = d[0] = g.nx[0] * px + g.ny[0] * py + g.b[0];
    for (int k = 1; k < N; ++k) {
      d[k] = g.nx[k] * px + g.ny[k] * py + g.b[k];
      m = S::vmax(m, d[k]);
    }
    return m;
  }

  // phi at W pixels from the line values: the lines not skipped get a bit in `live`, t[k] = exp(a (d_k - m)) and
  // their sum. Where only the max line is live (most of a footprint: away from the hull's corners one edge
  // dominates by far) the sum is exactly 1: phi = a m, without an exp or a log.
  template <int N>
  static RECON_INLINE V lse(const Prim& g, const V* d, V m, V* t, V& sum, unsigned& live) {
    const V cut = m - g.span;
    live = 0;
    for (int k = 0; k < N; ++k)
      if (S::any(d[k] >= cut)) live |= 1u << k;
    sum = S::splat(T(1));
    if (__builtin_popcount(live) == 1) {
      t[__builtin_ctz(live)] = sum;
      return g.a * m;
    }
    sum = S::splat(T(0));
    for (int k = 0; k < N; ++k) {
      if (live >> k & 1u) {
        t[k] = S::exp(g.a * (d[k] - m));
        sum += t[k];
      }
    }
    return g.a * m + S::log(sum);
  }

  template <int N>
  static RECON_INLINE V eval_n(const Prim& g, V px, V py) {
    V d[N], t[N], sum;
    unsigned live;
    const V phi = lse<N>(g, d, lines<N>(g, px, py, d), t, sum, live);
    return T(1) / (T(1) + S::exp(g.s * phi));  // sigmoid(-s phi); exp saturates, so C stays in [0, 1]
  }

  static RECON_INLINE V eval(const Prim& g, V px, V py, M& ok, V& zp) {
    ok = S::splati(-1);  // the compositor's alpha >= alpha_min test is the only cut
    zp = S::splat(g.z);
    switch (g.count) {
      case 3: return eval_n<3>(g, px, py);
      case 4: return eval_n<4>(g, px, py);
      case 5: return eval_n<5>(g, px, py);
      case 6: return eval_n<6>(g, px, py);
      case 7: return eval_n<7>(g, px, py);
      default: return eval_n<8>(g, px, py);
    }
  }

  // With x = s phi and C = sigmoid(-x): dC/dx = -C (1 - C) (as torch's sigmoid backward, from the output);
  // dphi/dd_k = a w_k and dphi/da = sum_k w_k d_k with the softmax weights w_k = t_k / sum.
  template <int N>
  static RECON_INLINE void backward_n(const Prim& g, V px, V py, V gC, V C, V* gp) {
    V d[N], t[N], sum;
    unsigned live;
    const V m = lines<N>(g, px, py, d);
    const V phi = lse<N>(g, d, m, t, sum, live);
    const V gx = -gC * C * (T(1) - C);
    gp[kS] += gx * phi;
    const V gphi = gx * g.s;
    if (__builtin_popcount(live) == 1) {  // one live line, the max everywhere: w = 1, dphi/da = m
      const int k = __builtin_ctz(live);
      const V gd = gphi * g.a;
      gp[3 * k] += gd * px;
      gp[3 * k + 1] += gd * py;
      gp[3 * k + 2] += gd;
      gp[kA] += gphi * m;
      return;
    }
    const V inv = T(1) / sum;
    const V gw = gphi * g.a * inv;
    V wd = S::splat(T(0));
    for (int k = 0; k < N; ++k) {
      if (!(live >> k & 1u)) continue;  // skipped lines have weight 0
      const V gd = gw * t[k];
      wd += t[k] * (d[k] - m);
      gp[3 * k] += gd * px;
      gp[3 * k + 1] += gd * py;
      gp[3 * k + 2] += gd;
    }
    gp[kA] += gphi * (m + wd * inv);
  }

  static RECON_INLINE void backward(const Prim& g, V px, V py, M m, V k, V dL_dk, V dL_dzp, V& d_mx, V& d_my,
                                    V* gp, V& g_z) {
    const V zero = S::splat(T(0));
    const V gC = S::select(m, dL_dk, zero);
    d_mx = zero;
    d_my = zero;
    g_z += S::select(m, dL_dzp, zero);
    switch (g.count) {
      case 3: backward_n<3>(g, px, py, gC, k, gp); break;
      case 4: backward_n<4>(g, px, py, gC, k, gp); break;
      case 5: backward_n<5>(g, px, py, gC, k, gp); break;
      case 6: backward_n<6>(g, px, py, gC, k, gp); break;
      case 7: backward_n<7>(g, px, py, gC, k, gp); break;
      default: backward_n<8>(g, px, py, gC, k, gp); break;
    }
  }
};

}  // namespace recon
