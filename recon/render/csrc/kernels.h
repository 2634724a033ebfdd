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

#include <cmath>

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

}  // namespace recon
