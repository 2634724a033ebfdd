// Per-pixel kernels of the primitives that share the tile compositor (DESIGN.md §3, METHODS.md §2.3).
//
// A kernel policy K<T> supplies, for one primitive with screen centre (mx, my) and a payload of K::kPayload
// numbers:
//   prepare(mx, my, payload, kmin, prim, ext_x, ext_y): once per (primitive, tile); false if the primitive can
//       never reach a kernel value of kmin (= alpha_min / opacity); otherwise fills `prim` and a conservative
//       half-extent in pixels of the region where it may, so the compositor visits only those pixels;
//   eval(prim, px, py, ok): kernel values in [0, 1] at Simd<T>::W pixel centres, `ok` false on lanes to skip;
//   backward(prim, px, py, k, dL_dk, d_mx, d_my, g_payload): per-lane dL/d(mx, my) into d_mx, d_my (the
//       compositor also sums their absolute values for densification), dL/d(payload) added to g_payload[P].
// Binning, sorting, compositing, every auxiliary map and the backward walk are written once in rasterize.cpp and
// templated on the policy, so 2D surfels and smooth convexes plug in their own kernel here.
#pragma once

#include <cmath>

#include "simd.h"

namespace recon {

template <typename T>
struct GaussianKernel {
  using S = Simd<T>;
  using V = typename S::V;
  using M = typename S::M;

  // Payload: the conic (inverse of the 2D covariance) as (a, b, c) = [[a, b], [b, c]].
  static constexpr int kPayload = 3;

  struct Prim {
    T mx, my, a, b, c, sigma_cut;
  };

  static RECON_INLINE bool prepare(T mx, T my, const T* payload, T kmin, Prim& g, T& ext_x, T& ext_y) {
    if (!(kmin < T(1))) return false;  // opacity below alpha_min (or zero, or NaN): never composited
    g.mx = mx;
    g.my = my;
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
  static RECON_INLINE V eval(const Prim& g, V px, V py, M& ok) {
    const V dx = g.mx - px;
    const V dy = g.my - py;
    const V s = T(0.5) * (g.a * dx * dx + g.c * dy * dy) + g.b * dx * dy;
    ok = (s >= T(0)) & (s <= g.sigma_cut);
    return S::exp(-s);
  }

  static RECON_INLINE void backward(const Prim& g, V px, V py, V k, V dL_dk, V& d_mx, V& d_my, V* g_payload) {
    const V dx = g.mx - px;
    const V dy = g.my - py;
    const V dL_ds = -k * dL_dk;  // d exp(-sigma) / d sigma = -exp(-sigma)
    d_mx = dL_ds * (g.a * dx + g.b * dy);
    d_my = dL_ds * (g.b * dx + g.c * dy);
    g_payload[0] += dL_ds * T(0.5) * dx * dx;
    g_payload[1] += dL_ds * dx * dy;
    g_payload[2] += dL_ds * T(0.5) * dy * dy;
  }
};

}  // namespace recon
