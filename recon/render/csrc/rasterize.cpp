// Front-to-back tile compositor with hand-written backward, shared by every primitive kernel (kernels.h).
//
// Forward, per pixel over its tile's depth-sorted list (the 3DGS rules): alpha = min(alpha_max, o K(p)); skip
// alpha < alpha_min; stop, without compositing, when T (1 - alpha) <= t_eps; w = alpha T. It accumulates the
// feature channels (colour, and depth / normal when asked), and, only when asked, the median depth and the two
// depth-distortion sums (METHODS.md §3.2a/b) inside the same loop. It keeps per pixel only the final T, the
// number of list entries walked, the median's list index and the final distortion sums, so the backward walks each
// list in reverse (recovering T by division) without per-pair storage.
//
// Work is split over tiles (one OpenMP region per pass, dynamic schedule, heaviest tiles first). Inside a tile the
// loop runs primitive by primitive over the pixels of the primitive's footprint, Simd<T>::W pixels of a row at a
// time (per-pixel state is structure-of-arrays, rows padded to whole vectors), so each primitive's record is read
// once per tile, pixels its kernel cannot reach are never visited, and records a few entries ahead are prefetched.
// The backward writes one gradient row per (primitive, tile) slot, at the slot's primitive-major position, then
// sums the rows of each primitive: no atomics, and results that do not depend on thread scheduling.
#include "common.h"
#include "ops.h"
#include "kernels.h"

#include <concepts>
#include <limits>
#include <memory>
#include <type_traits>

namespace recon {
namespace {

// Record layout of one primitive, gathered before the pixel loop: mx, my, payload[P], opacity, depth, the
// per-primitive bound of its footprint (bound_x, bound_y; see fill_bounds), features[F].
struct Layout {
  int P, F;
  int stride() const { return 6 + P + F; }
  int opacity() const { return 2 + P; }
  int depth() const { return 3 + P; }
  int bound() const { return 4 + P; }
  int features() const { return 6 + P; }
};

// Gradient row of one slot: d mean2d[2], d payload[P], d opacity, d depth, d features[F], |d mean2d| [2].
struct GradLayout {
  int P, F;
  int stride() const { return 8 + P + F; }
  int payload() const { return 2; }
  int opacity() const { return 2 + P; }
  int depth() const { return 3 + P; }
  int features() const { return 4 + P; }
  int absgrad() const { return 4 + P + F; }
};

// How many list entries ahead the compositor prefetches primitive records (and, backward, gradient rows).
constexpr int kPrefetch = 8;

struct Grid {
  int W, H, ts, TW, TH;
  int64_t tiles_per_cam() const { return int64_t(TW) * TH; }
};

// Pixels of tile (tx, ty) whose centres lie within (ext_x, ext_y) of (mx, my): inclusive global bounds.
template <typename T>
inline bool footprint_pixels(const Grid& grid, int tx, int ty, T mx, T my, T ext_x, T ext_y, int& x0, int& x1,
                             int& y0, int& y1) {
  const int px0 = tx * grid.ts, px1 = std::min(grid.W, px0 + grid.ts) - 1;
  const int py0 = ty * grid.ts, py1 = std::min(grid.H, py0 + grid.ts) - 1;
  const T lo_x = std::ceil(mx - ext_x - T(0.5)), hi_x = std::floor(mx + ext_x - T(0.5));
  const T lo_y = std::ceil(my - ext_y - T(0.5)), hi_y = std::floor(my + ext_y - T(0.5));
  x0 = lo_x > T(px0) ? int(std::min(lo_x, T(px1 + 1))) : px0;
  x1 = hi_x < T(px1) ? int(std::max(hi_x, T(px0 - 1))) : px1;
  y0 = lo_y > T(py0) ? int(std::min(lo_y, T(py1 + 1))) : py0;
  y1 = hi_y < T(py1) ? int(std::max(hi_y, T(py0 - 1))) : py1;
  return x0 <= x1 && y0 <= y1;
}

// Kernels may narrow each row of a footprint: row_span(prim, py, lo, hi) bounds the pixel centres x of row py
// that can reach alpha_min (false: none do), where the box is loose (a convex's polygon in its bounding box).
template <typename Kern, typename T>
concept HasRowSpan = requires(const typename Kern::Prim& g, T v, T& e) {
  { Kern::row_span(g, v, e, e) } -> std::same_as<bool>;
};

// The SIMD columns [c0, c1] of row y of a footprint whose pixels span [x0, x1] in the tile starting at px0; false
// when the kernel's row span leaves none.
template <typename T, typename Kern>
inline bool row_columns(const typename Kern::Prim& prim, int px0, int x0, int x1, int y, int& c0, int& c1) {
  constexpr int LW = Simd<T>::W;
  if constexpr (HasRowSpan<Kern, T>) {
    T lo, hi;
    if (!Kern::row_span(prim, T(y) + T(0.5), lo, hi)) return false;
    const T xa = std::ceil(lo - T(0.5)), xb = std::floor(hi - T(0.5));  // pixels whose centre is in [lo, hi]
    const int a = xa > T(x0) ? (xa > T(x1) ? x1 + 1 : int(xa)) : x0;
    const int b = xb < T(x1) ? (xb < T(x0) ? x0 - 1 : int(xb)) : x1;
    if (a > b) return false;
    x0 = a;
    x1 = b;
  }
  c0 = (x0 - px0) / LW;
  c1 = (x1 - px0) / LW;
  return true;
}

// Heaviest tiles first, so the dynamic schedule does not end with one long tile on one thread.
inline std::vector<int64_t> tile_order(const int32_t* toff, int64_t n_tiles) {
  std::vector<int64_t> order(n_tiles);
  for (int64_t t = 0; t < n_tiles; ++t) order[t] = t;
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return toff[a + 1] - toff[a] > toff[b + 1] - toff[b]; });
  return order;
}

template <typename T>
void pack_records(const Layout& L, int64_t CN, const T* m2d, const T* payload, const T* opac, const T* depth,
                  const T* feat, std::vector<T>& rec) {
  const int S = L.stride();
  rec.resize(size_t(CN) * S);
#pragma omp parallel for schedule(dynamic, 4096) if (CN >= kParallelMinItems)
  for (int64_t g = 0; g < CN; ++g) {
    T* r = rec.data() + g * S;
    r[0] = m2d[g * 2];
    r[1] = m2d[g * 2 + 1];
    for (int i = 0; i < L.P; ++i) r[2 + i] = payload[g * L.P + i];
    r[L.opacity()] = opac[g];
    r[L.depth()] = depth[g];
    r[L.bound()] = r[L.bound() + 1] = std::numeric_limits<T>::infinity();
    for (int f = 0; f < L.F; ++f) r[L.features() + f] = feat[g * L.F + f];
  }
}

// Kernels whose prepare() box is loose may supply bound(mx, my, z, payload, kmin, ext_x, ext_y): a tighter box,
// too costly to compute per (primitive, tile), computed once per primitive here (ConvexKernel: the exact polygon the
// kernel can reach at the primitive's opacity).
template <typename Kern, typename T>
concept HasBound = requires(T v, const T* q, T& e) {
  { Kern::bound(v, v, v, q, v, e, e) } -> std::same_as<bool>;
};

// The half extents the kernel can reach from a record (mx, my, payload, opacity, depth), or false where it never
// reaches alpha_min: Kern::bound where the kernel has one, else the box of prepare().
template <typename T, typename Kern>
inline bool primitive_bound(const T* mxy, const T* payload, T opacity, T depth, T alpha_min, T& ex, T& ey) {
  if constexpr (HasBound<Kern, T>) {
    return Kern::bound(mxy[0], mxy[1], depth, payload, alpha_min / opacity, ex, ey);
  } else {
    typename Kern::Prim prim;
    return Kern::prepare(mxy[0], mxy[1], depth, payload, alpha_min / opacity, prim, ex, ey);
  }
}

// Fills the records' bound slots (negative: never composited); kernels without bound() keep +inf.
template <typename T, typename Kern>
void fill_bounds(const Layout& L, int64_t CN, T alpha_min, std::vector<T>& rec) {
  if constexpr (HasBound<Kern, T>) {
    const int S = L.stride();
#pragma omp parallel for schedule(dynamic, 4096) if (CN >= kParallelMinItems)
    for (int64_t g = 0; g < CN; ++g) {
      T* r = rec.data() + g * S;
      T ex, ey;
      const bool ok = primitive_bound<T, Kern>(r, r + 2, r[L.opacity()], r[L.depth()], alpha_min, ex, ey);
      r[L.bound()] = ok ? ex : T(-1);
      r[L.bound() + 1] = ok ? ey : T(-1);
    }
  }
}

// prepare() for one record, its box clipped by the record's bound; false if the primitive is never composited.
template <typename T, typename Kern>
RECON_INLINE bool prepare_record(const Layout& L, const T* r, T alpha_min, typename Kern::Prim& prim, T& ex,
                                 T& ey) {
  if (!(r[L.bound()] >= T(0))) return false;
  if (!Kern::prepare(r[0], r[1], r[L.depth()], r + 2, alpha_min / r[L.opacity()], prim, ex, ey)) return false;
  ex = std::min(ex, r[L.bound()]);
  ey = std::min(ey, r[L.bound() + 1]);
  return true;
}

struct Flags {
  bool depth, median, l1, ndc2;
};

template <typename T>
struct Consts {
  T alpha_max, alpha_min, t_eps, ndc_near, ndc_scale;
  explicit Consts(const RasterConsts& k)
      : alpha_max(T(k.alpha_max)),
        alpha_min(T(k.alpha_min)),
        t_eps(T(k.t_eps)),
        ndc_near(T(k.ndc_near)),
        ndc_scale(T(k.ndc_far / (k.ndc_far - k.ndc_near))) {}
};

// Where a tile sits: camera, tile coordinates, first pixel, and its size clipped to the image.
struct TileGeom {
  int64_t c;
  int tx, ty, px0, py0, pw, ph;
  TileGeom(const Grid& grid, int64_t tile) {
    c = tile / grid.tiles_per_cam();
    const int t_in = int(tile % grid.tiles_per_cam());
    tx = t_in % grid.TW;
    ty = t_in / grid.TW;
    px0 = tx * grid.ts;
    py0 = ty * grid.ts;
    pw = std::min(grid.ts, grid.W - px0);
    ph = std::min(grid.ts, grid.H - py0);
  }
  int64_t pixel(const Grid& grid, int ly, int lx) const { return (c * grid.H + py0 + ly) * grid.W + px0 + lx; }
};

// Per-thread tile state, structure-of-arrays over the tile's pixels with rows padded to whole SIMD vectors.
template <typename T>
struct TileBuffers {
  using I = typename Simd<T>::I;
  int RS, NP;  // row stride, padded pixel count
  explicit TileBuffers(int ts) : RS((ts + Simd<T>::W - 1) / Simd<T>::W * Simd<T>::W), NP(ts * RS) {}
  std::vector<T> buf(int n = 1) const { return std::vector<T>(size_t(NP) * n); }
  std::vector<I> ibuf() const { return std::vector<I>(NP); }
};

// The feature-channel count as a compile-time constant for the common cases (RGB, RGB + normal, none), so the
// channel loops unroll and the backward keeps its per-primitive channel sums in registers; -1 = known at run time.
template <int FC>
struct Channels {
  static constexpr int kStatic = FC;
  static RECON_INLINE int count(int runtime) { return FC >= 0 ? FC : runtime; }
};

template <typename T>
struct FwdArgs {
  Layout L;
  Grid grid;
  const T* rec;
  const T* bg;
  const int32_t* toff;
  const int32_t* ids;
  Flags fl;
  Consts<T> k;
  T *out_feat, *out_depth, *out_alpha, *out_T, *out_med, *out_l1, *out_ndc2, *out_sums;
  int32_t *out_last, *out_med_idx;
};

// Per-pixel forward state. Dz = sum w z (the expected-depth map, and the S sum of the L1 distortion, whose A sum
// is 1 - T); Zm the median depth where the kernel's depth varies over the pixel (surfels); A2, M1, M2, D2 the
// NDC-form sums over the entries at or beyond the NDC near plane.
template <typename T>
struct FwdWork {
  using I = typename Simd<T>::I;
  TileBuffers<T> tb;
  std::vector<T> Tr, act, acc, Dz, D1, Zm, A2, M1, M2, D2;
  std::vector<I> last, med;
  FwdWork(int ts, int F)
      : tb(ts),
        Tr(tb.buf()),
        act(tb.buf()),
        acc(tb.buf(F)),
        Dz(tb.buf()),
        D1(tb.buf()),
        Zm(tb.buf()),
        A2(tb.buf()),
        M1(tb.buf()),
        M2(tb.buf()),
        D2(tb.buf()),
        last(tb.ibuf()),
        med(tb.ibuf()) {}
};

template <typename T, typename Kern, int FC>
RECON_MULTIVERSION void forward_tile(const FwdArgs<T>& a, int64_t tile, FwdWork<T>& w) {
  using S = Simd<T>;
  using V = typename S::V;
  using M = typename S::M;
  using I = typename S::I;
  constexpr int LW = S::W;
  constexpr bool kPixelDepth = Kern::kPixelDepth;
  const Layout& L = a.L;
  const Grid& grid = a.grid;
  const int S_ = L.stride(), F = Channels<FC>::count(L.F), RS = w.tb.RS, NP = w.tb.NP;
  const TileGeom tg(grid, tile);
  const Consts<T>& k = a.k;
  const Flags fl = a.fl;

  std::fill(w.Tr.begin(), w.Tr.end(), T(1));
  std::fill(w.acc.begin(), w.acc.end(), T(0));
  std::fill(w.last.begin(), w.last.end(), I(0));
  std::fill(w.med.begin(), w.med.end(), I(-1));
  std::fill(w.act.begin(), w.act.end(), T(0));
  for (auto* v : {&w.Dz, &w.D1, &w.Zm, &w.A2, &w.M1, &w.M2, &w.D2}) std::fill(v->begin(), v->end(), T(0));
  for (int ly = 0; ly < tg.ph; ++ly)
    for (int lx = 0; lx < tg.pw; ++lx) w.act[ly * RS + lx] = T(1);
  int n_active = tg.pw * tg.ph;

  const V iota = S::iota(), zero = S::splat(T(0));
  const T ndc_k = k.ndc_scale * k.ndc_near;
  typename Kern::Prim prim;
  const int32_t s0 = a.toff[tile], s1 = a.toff[tile + 1];
  for (int32_t s = s0; s < s1 && n_active > 0; ++s) {
    const I kk = I(s - s0);
    // Records of a tile's list are scattered in memory: fetch a few entries ahead so the misses overlap.
    if (s + kPrefetch < s1) __builtin_prefetch(a.rec + int64_t(a.ids[s + kPrefetch]) * S_);
    const T* r = a.rec + int64_t(a.ids[s]) * S_;
    const T op = r[L.opacity()];
    const T z = r[L.depth()];
    T ex, ey;
    if (!prepare_record<T, Kern>(L, r, k.alpha_min, prim, ex, ey)) continue;
    int x0, x1, y0, y1;
    if (!footprint_pixels(grid, tg.tx, tg.ty, r[0], r[1], ex, ey, x0, x1, y0, y1)) continue;
    const T* feat = r + L.features();
    // NDC depth m = s (1 - n/z) enters the distortion only through differences m_i - m_j, so it is accumulated
    // shifted by its asymptote s: u = m - s = -s n / z. Unshifted, m ~ 1 and the sum u^2 A + U2 - 2 u U1 loses
    // about three digits to cancellation in float32. With a depth constant over the primitive, the near-plane
    // test and u are per primitive; with a per-pixel depth (surfels) they are per lane.
    const bool ndc_on = fl.ndc2 && (kPixelDepth || z >= k.ndc_near);
    const V m_ndc_prim = S::splat(-ndc_k / z);
    const M kk1 = S::splati(kk + 1), kkv = S::splati(kk);
    for (int y = y0; y <= y1; ++y) {
      int c0, c1;
      if (!row_columns<T, Kern>(prim, tg.px0, x0, x1, y, c0, c1)) continue;
      const V pyv = S::splat(T(y) + T(0.5));
      const int row = (y - tg.py0) * RS;
      for (int ci = c0; ci <= c1; ++ci) {
        const int p = row + ci * LW;
        V actv = S::load(&w.act[p]);
        const M live = actv > T(0);
        if (!S::any(live)) continue;  // every pixel of the vector has stopped: no kernel to evaluate
        const V pxv = S::splat(T(tg.px0 + ci * LW) + T(0.5)) + iota;
        M m;
        V zv;
        const V kv = Kern::eval(prim, pxv, pyv, m, zv);
        m &= live;
        if (!S::any(m)) continue;
        const V alpha = S::vmin(S::splat(k.alpha_max), op * kv);
        m &= alpha >= k.alpha_min;
        if (!S::any(m)) continue;
        const V Tp = S::load(&w.Tr[p]);
        const V nT = Tp * (T(1) - alpha);
        const M stop = m & (nT <= k.t_eps);
        if (S::any(stop)) {
          n_active -= S::count(stop);
          S::store(&w.act[p], S::select(stop, zero, actv));
          m &= ~stop;
        }
        const V wv = S::select(m, alpha * Tp, zero);
        for (int f = 0; f < F; ++f) {
          T* ap = &w.acc[size_t(f) * NP + p];
          S::store(ap, S::load(ap) + wv * feat[f]);
        }
        if (fl.depth || fl.l1) {
          const V Dv = S::load(&w.Dz[p]);
          if (fl.l1) S::store(&w.D1[p], S::load(&w.D1[p]) + T(2) * wv * (zv * (T(1) - Tp) - Dv));
          S::store(&w.Dz[p], Dv + wv * zv);
        }
        if (fl.median) {
          const M mm = m & (Tp > T(0.5));
          S::storei(&w.med[p], S::selecti(mm, kkv, S::loadi(&w.med[p])));
          if constexpr (kPixelDepth) S::store(&w.Zm[p], S::select(mm, zv, S::load(&w.Zm[p])));
        }
        if (ndc_on) {
          V un = m_ndc_prim, wn = wv;
          if constexpr (kPixelDepth) {
            const M mk = m & (zv >= k.ndc_near);
            un = S::select(mk, -ndc_k / S::select(mk, zv, S::splat(T(1))), zero);
            wn = S::select(mk, wv, zero);
          }
          const V Av = S::load(&w.A2[p]), M1v = S::load(&w.M1[p]), M2v = S::load(&w.M2[p]);
          S::store(&w.D2[p], S::load(&w.D2[p]) + wn * (un * un * Av + M2v - T(2) * un * M1v));
          S::store(&w.A2[p], Av + wn);
          S::store(&w.M1[p], M1v + wn * un);
          S::store(&w.M2[p], M2v + wn * un * un);
        }
        S::store(&w.Tr[p], S::select(m, nT, Tp));
        S::storei(&w.last[p], S::selecti(m, kk1, S::loadi(&w.last[p])));
      }
    }
  }

  for (int ly = 0; ly < tg.ph; ++ly)
    for (int lx = 0; lx < tg.pw; ++lx) {
      const int p = ly * RS + lx;
      const int64_t pix = tg.pixel(grid, ly, lx);
      const T Tf = w.Tr[p];
      for (int f = 0; f < F; ++f) a.out_feat[pix * F + f] = w.acc[size_t(f) * NP + p] + Tf * a.bg[tg.c * F + f];
      if (fl.depth) a.out_depth[pix] = w.Dz[p];
      a.out_alpha[pix] = T(1) - Tf;
      a.out_T[pix] = Tf;
      a.out_last[pix] = int32_t(w.last[p]);
      if (fl.median) {
        const I mi = w.med[p];
        a.out_med_idx[pix] = int32_t(mi);
        if constexpr (kPixelDepth)
          a.out_med[pix] = w.Zm[p];
        else
          a.out_med[pix] = mi >= 0 ? a.rec[int64_t(a.ids[s0 + mi]) * S_ + L.depth()] : T(0);
      }
      if (fl.l1) {
        a.out_l1[pix] = w.D1[p];
        a.out_sums[pix * 5] = T(1) - Tf;
        a.out_sums[pix * 5 + 1] = w.Dz[p];
      }
      if (fl.ndc2) {
        a.out_ndc2[pix] = w.D2[p];
        a.out_sums[pix * 5 + 2] = w.A2[p];
        a.out_sums[pix * 5 + 3] = w.M1[p];
        a.out_sums[pix * 5 + 4] = w.M2[p];
      }
    }
}

template <typename T, typename Kern, int FC>
void forward_impl(const FwdArgs<T>& a, int64_t C) {
  const int64_t n_tiles = C * a.grid.tiles_per_cam();
  const std::vector<int64_t> order = tile_order(a.toff, n_tiles);
#pragma omp parallel if (a.toff[n_tiles] >= kParallelMinPairs)
  {
    FwdWork<T> work(a.grid.ts, a.L.F);
#pragma omp for schedule(dynamic, 1)
    for (int64_t oi = 0; oi < n_tiles; ++oi) forward_tile<T, Kern, FC>(a, order[oi], work);
  }
}

template <typename T>
struct BwdArgs {
  Layout L;
  Grid grid;
  const T* rec;
  const T* bg;
  const int32_t *toff, *ids, *slot_pos, *last_in, *med_idx;
  const T *Tfin, *sums, *g_feat, *g_depth, *g_alpha, *g_med, *g_l1, *g_ndc2;
  Consts<T> k;
  T* slot_grad;
};

template <typename T>
struct BwdWork {
  using S = Simd<T>;
  using I = typename S::I;
  TileBuffers<T> tb;
  // Tr: T after the current entry; Q: dL/dT folded over the entries behind it (see backward_tile). The
  // distortion gradients only need per-pixel combinations of dL/dmap and the forward's final sums: R1, R2 (L1
  // form, updated as the walk passes each entry) and N0..N2 (NDC form, constant).
  std::vector<T> Tr, Q, gF, gD, gMd, gL, R1, R2, N0, N1, N2;
  std::vector<I> last, med;
  std::vector<T> g_ft;  // per-channel vector accumulators when F is only known at run time (W lanes each)
  BwdWork(int ts, int F)
      : tb(ts),
        Tr(tb.buf()),
        Q(tb.buf()),
        gF(tb.buf(F)),
        gD(tb.buf()),
        gMd(tb.buf()),
        gL(tb.buf()),
        R1(tb.buf()),
        R2(tb.buf()),
        N0(tb.buf()),
        N1(tb.buf()),
        N2(tb.buf()),
        last(tb.ibuf()),
        med(tb.ibuf()),
        g_ft(size_t(F) * Simd<T>::W) {}
};

template <typename T, typename Kern, int FC>
RECON_MULTIVERSION void backward_tile(const BwdArgs<T>& a, int64_t tile, BwdWork<T>& w) {
  using S = Simd<T>;
  using V = typename S::V;
  using M = typename S::M;
  using I = typename S::I;
  constexpr int LW = S::W;
  constexpr bool kPixelDepth = Kern::kPixelDepth;
  const Layout& L = a.L;
  const Grid& grid = a.grid;
  const GradLayout GL{L.P, L.F};
  const int S_ = L.stride(), F = Channels<FC>::count(L.F), P = L.P, SG = GL.stride(), RS = w.tb.RS,
            NP = w.tb.NP;
  const TileGeom tg(grid, tile);
  const Consts<T>& k = a.k;

  // Padding lanes keep last = 0, so the reverse walk never composites them, and zero gradients.
  std::fill(w.Tr.begin(), w.Tr.end(), T(1));
  std::fill(w.last.begin(), w.last.end(), I(0));
  std::fill(w.med.begin(), w.med.end(), I(-1));
  for (auto* v : {&w.Q, &w.gF, &w.gD, &w.gMd, &w.gL, &w.R1, &w.R2, &w.N0, &w.N1, &w.N2})
    std::fill(v->begin(), v->end(), T(0));
  I max_last = 0;
  for (int ly = 0; ly < tg.ph; ++ly)
    for (int lx = 0; lx < tg.pw; ++lx) {
      const int p = ly * RS + lx;
      const int64_t pix = tg.pixel(grid, ly, lx);
      w.Tr[p] = a.Tfin[pix];
      w.last[p] = a.last_in[pix];
      max_last = std::max(max_last, w.last[p]);
      // Q starts as dL/dT_final: the background term of every colour channel, minus the alpha-map gradient.
      T q = a.g_alpha ? -a.g_alpha[pix] : T(0);
      for (int f = 0; f < F; ++f) {
        const T gf = a.g_feat[pix * F + f];
        w.gF[size_t(f) * NP + p] = gf;
        q += a.bg[tg.c * F + f] * gf;
      }
      w.Q[p] = q;
      if (a.g_depth) w.gD[p] = a.g_depth[pix];
      if (a.g_med) {
        w.gMd[p] = a.g_med[pix];
        w.med[p] = a.med_idx[pix];
      }
      if (a.g_l1) {
        // L1 form, with A_i, S_i the sums before entry i and A, S the totals:
        //   dD/dw_i = 4 (z_i A_i - S_i) + 2 (S - z_i A) = z_i R1 - R2 with R1 = 2A - 4B, R2 = 2S - 4U,
        //   B, U the sums of w and w z over the entries behind i (so both start at 2A, 2S);
        //   dD/dz_i = 2 w_i (2 A_i + w_i - A) = w_i R1 - 2 w_i^2.
        const T gl = a.g_l1[pix];
        w.gL[p] = gl;
        w.R1[p] = T(2) * gl * a.sums[pix * 5];
        w.R2[p] = T(2) * gl * a.sums[pix * 5 + 1];
      }
      if (a.g_ndc2) {
        // NDC form, with the totals A, M1, M2 (shifted depths u): dD/dw_i = M2 + u_i^2 A - 2 u_i M1 and
        // dD/du_i = 2 w_i (u_i A - M1); both only need gN A, gN M1, gN M2.
        const T gn = a.g_ndc2[pix];
        w.N0[p] = gn * a.sums[pix * 5 + 4];
        w.N1[p] = gn * a.sums[pix * 5 + 2];
        w.N2[p] = gn * a.sums[pix * 5 + 3];
      }
    }
  const int32_t s0 = a.toff[tile], s1 = a.toff[tile + 1];
  for (int32_t s = s0 + int32_t(max_last); s < s1; ++s) {
    T* gr = a.slot_grad + size_t(a.slot_pos[s]) * SG;
    for (int i = 0; i < SG; ++i) gr[i] = T(0);
  }

  const V iota = S::iota(), zero = S::splat(T(0));
  const T ndc_k = k.ndc_scale * k.ndc_near;
  typename Kern::Prim prim;
  constexpr int kRegs = FC > 0 ? FC : 1;
  V g_ft_reg[kRegs];
  for (I kk = max_last - 1; kk >= 0; --kk) {
    const int32_t s = s0 + int32_t(kk);
    if (kk >= kPrefetch) {
      __builtin_prefetch(a.rec + int64_t(a.ids[s - kPrefetch]) * S_);
      __builtin_prefetch(a.slot_grad + size_t(a.slot_pos[s - kPrefetch]) * SG, 1);
    }
    T* gr = a.slot_grad + size_t(a.slot_pos[s]) * SG;
    const T* r = a.rec + int64_t(a.ids[s]) * S_;
    const T op = r[L.opacity()];
    const T z = r[L.depth()];
    T ex, ey;
    int x0, x1, y0, y1;
    if (!prepare_record<T, Kern>(L, r, k.alpha_min, prim, ex, ey) ||
        !footprint_pixels(grid, tg.tx, tg.ty, r[0], r[1], ex, ey, x0, x1, y0, y1)) {
      for (int i = 0; i < SG; ++i) gr[i] = T(0);
      continue;
    }
    const T* feat = r + L.features();
    const bool ndc_on = a.g_ndc2 && (kPixelDepth || z >= k.ndc_near);
    const V m_ndc_prim = S::splat(-ndc_k / z), dm_dz_prim = S::splat(ndc_k / (z * z));
    const M kkv = S::splati(kk);
    V g_op = zero, g_z = zero, g_mx = zero, g_my = zero, g_ax = zero, g_ay = zero;
    V g_pay[Kern::kPayload];
    for (int i = 0; i < P; ++i) g_pay[i] = zero;
    if constexpr (FC >= 0) {
      for (int f = 0; f < kRegs; ++f) g_ft_reg[f] = zero;
    } else {
      std::fill(w.g_ft.begin(), w.g_ft.end(), T(0));
    }
    for (int y = y0; y <= y1; ++y) {
      int c0, c1;
      if (!row_columns<T, Kern>(prim, tg.px0, x0, x1, y, c0, c1)) continue;
      const V pyv = S::splat(T(y) + T(0.5));
      const int row = (y - tg.py0) * RS;
      for (int ci = c0; ci <= c1; ++ci) {
        const int p = row + ci * LW;
        const M live = kkv < S::loadi(&w.last[p]);  // pixels that composited this entry or stopped after it
        if (!S::any(live)) continue;
        const V pxv = S::splat(T(tg.px0 + ci * LW) + T(0.5)) + iota;
        M m;
        V zv;
        const V kv = Kern::eval(prim, pxv, pyv, m, zv);
        m &= live;
        if (!S::any(m)) continue;
        const V raw = op * kv;
        const V alpha = S::vmin(S::splat(k.alpha_max), raw);
        m &= alpha >= k.alpha_min;
        if (!S::any(m)) continue;
        const V Tp = S::load(&w.Tr[p]);
        const V Ti = Tp / (T(1) - alpha);  // T before this primitive
        const V wv = S::select(m, alpha * Ti, zero);
        V G = zero;   // dL/dw of this pair
        V gz = zero;  // dL/dz of this pair (z: the kernel's depth at the pixel)
        for (int f = 0; f < F; ++f) {
          const V gf = S::load(&w.gF[size_t(f) * NP + p]);
          G += gf * feat[f];
          if constexpr (FC >= 0) {
            g_ft_reg[f] += wv * gf;
          } else {
            T* gp = &w.g_ft[size_t(f) * LW];
            S::store(gp, S::load(gp) + wv * gf);
          }
        }
        if (a.g_depth) {
          const V gDv = S::load(&w.gD[p]);
          G += gDv * zv;
          gz += wv * gDv;
        }
        if (a.g_med) gz += S::select(m & (S::loadi(&w.med[p]) == kkv), S::load(&w.gMd[p]), zero);
        if (a.g_l1) {
          const V gLv = S::load(&w.gL[p]), R1v = S::load(&w.R1[p]), R2v = S::load(&w.R2[p]);
          G += zv * R1v - R2v;
          gz += wv * R1v - T(2) * gLv * wv * wv;  // wv = 0 on masked lanes
          S::store(&w.R1[p], R1v - T(4) * gLv * wv);
          S::store(&w.R2[p], R2v - T(4) * gLv * wv * zv);
        }
        if (ndc_on) {
          const V N1v = S::load(&w.N1[p]), N2v = S::load(&w.N2[p]);
          if constexpr (kPixelDepth) {
            const M mk = m & (zv >= k.ndc_near);
            const V zs = S::select(mk, zv, S::splat(T(1)));
            const V un = -ndc_k / zs, dm = ndc_k / (zs * zs);
            G += S::select(mk, S::load(&w.N0[p]) + un * (un * N1v - T(2) * N2v), zero);
            gz += S::select(mk, T(2) * dm * wv * (un * N1v - N2v), zero);
          } else {
            G += S::load(&w.N0[p]) + m_ndc_prim * (m_ndc_prim * N1v - T(2) * N2v);
            gz += T(2) * dm_dz_prim * wv * (m_ndc_prim * N1v - N2v);
          }
        }
        // With G_i = dL/dw_i and Q_i = (sum_{j>i} G_j w_j + T_final dL/dT_final) / T_{i+1}, the derivative of
        // every map w.r.t. alpha_i is T_i (G_i - Q_i), and Q_{i-1} = alpha_i G_i + (1 - alpha_i) Q_i. No gradient
        // passes where alpha was clamped to alpha_max.
        const V Qv = S::load(&w.Q[p]);
        const V d_alpha = S::select(m & (raw <= k.alpha_max), Ti * (G - Qv), zero);
        S::store(&w.Q[p], S::select(m, alpha * G + (T(1) - alpha) * Qv, Qv));
        S::store(&w.Tr[p], S::select(m, Ti, Tp));
        g_op += d_alpha * kv;
        V d_mx, d_my;
        Kern::backward(prim, pxv, pyv, m, kv, d_alpha * op, gz, d_mx, d_my, g_pay, g_z);
        g_mx += d_mx;
        g_my += d_my;
        g_ax += S::vabs(d_mx);
        g_ay += S::vabs(d_my);
      }
    }
    gr[0] = S::hsum(g_mx);
    gr[1] = S::hsum(g_my);
    for (int i = 0; i < P; ++i) gr[GL.payload() + i] = S::hsum(g_pay[i]);
    gr[GL.opacity()] = S::hsum(g_op);
    gr[GL.depth()] = S::hsum(g_z);
    for (int f = 0; f < F; ++f) {
      if constexpr (FC >= 0)
        gr[GL.features() + f] = S::hsum(g_ft_reg[f]);
      else
        gr[GL.features() + f] = S::hsum(S::load(&w.g_ft[size_t(f) * LW]));
    }
    gr[GL.absgrad()] = S::hsum(g_ax);
    gr[GL.absgrad() + 1] = S::hsum(g_ay);
  }
}

template <typename T, typename Kern, int FC>
void backward_impl(const BwdArgs<T>& a, int64_t C, int64_t N, const int64_t* goff, T* out_grad) {
  const int64_t n_tiles = C * a.grid.tiles_per_cam(), CN = C * N;
  const int SG = GradLayout{a.L.P, a.L.F}.stride();
  const std::vector<int64_t> order = tile_order(a.toff, n_tiles);
#pragma omp parallel if (a.toff[n_tiles] >= kParallelMinPairs)
  {
    BwdWork<T> work(a.grid.ts, a.L.F);
#pragma omp for schedule(dynamic, 1)
    for (int64_t oi = 0; oi < n_tiles; ++oi) backward_tile<T, Kern, FC>(a, order[oi], work);

    // Sum each primitive's slot rows (contiguous thanks to the primitive-major positions).
#pragma omp for schedule(dynamic, 4096)
    for (int64_t g = 0; g < CN; ++g) {
      T* o = out_grad + g * SG;
      std::fill(o, o + SG, T(0));
      for (int64_t q = goff[g]; q < goff[g + 1]; ++q) {
        const T* gr = a.slot_grad + size_t(q) * SG;
        for (int i = 0; i < SG; ++i) o[i] += gr[i];
      }
    }
  }
}

// Calls f.template operator()<Kern, FC>() with the kernel policy whose id is `kernel_id` (checked against the
// payload size) and the channel count as a constant where it is a common one. Adding a primitive: one case here.
template <typename T, typename Fn>
void dispatch_kernel(int64_t kernel_id, int P, int F, Fn&& fn) {
  auto with_kernel = [&](auto kern_tag) {
    using Kern = typename decltype(kern_tag)::type;
    TORCH_CHECK(P == Kern::kPayload, "rasterize: kernel ", kernel_id, " reads ", Kern::kPayload,
                " payload numbers per primitive, got ", P);
    switch (F) {
      case 0: fn.template operator()<Kern, 0>(); break;
      case 3: fn.template operator()<Kern, 3>(); break;
      case 6: fn.template operator()<Kern, 6>(); break;
      default: fn.template operator()<Kern, -1>(); break;
    }
  };
  switch (kernel_id) {
    case GaussianKernel<T>::kId: with_kernel(std::type_identity<GaussianKernel<T>>{}); break;
    case SurfelKernel<T>::kId: with_kernel(std::type_identity<SurfelKernel<T>>{}); break;
    case ConvexKernel<T>::kId: with_kernel(std::type_identity<ConvexKernel<T>>{}); break;
    default: TORCH_CHECK(false, "rasterize: no primitive kernel has id ", kernel_id);
  }
}
struct Common {
  Layout L;
  Grid grid;
  int64_t C, N;
};

Common check_common(const at::Tensor& means2d, const at::Tensor& payload, const at::Tensor& opacities,
                    const at::Tensor& depths, const at::Tensor& features, const at::Tensor& backgrounds,
                    const at::Tensor& tile_offsets, const at::Tensor& ids, int64_t width, int64_t height,
                    int64_t tile_size) {
  for (const auto* t : {&means2d, &payload, &opacities, &depths, &features, &backgrounds, &tile_offsets, &ids})
    RECON_CHECK_INPUT(*t);
  const auto dt = means2d.scalar_type();
  TORCH_CHECK(payload.scalar_type() == dt && opacities.scalar_type() == dt && depths.scalar_type() == dt &&
                  features.scalar_type() == dt && backgrounds.scalar_type() == dt,
              "rasterize: all float inputs must share one dtype");
  TORCH_CHECK(tile_offsets.scalar_type() == at::kInt && ids.scalar_type() == at::kInt,
              "rasterize: tile offsets and ids must be int32");
  const int64_t C = means2d.size(0), N = means2d.size(1);
  TORCH_CHECK(payload.dim() == 3 && payload.size(0) == C && payload.size(1) == N, "payload must be [C,N,P]");
  TORCH_CHECK(opacities.sizes() == depths.sizes() && opacities.size(0) == C && opacities.size(1) == N,
              "opacities and depths must be [C,N]");
  TORCH_CHECK(features.dim() == 3 && features.size(0) == C && features.size(1) == N, "features must be [C,N,F]");
  TORCH_CHECK(backgrounds.dim() == 2 && backgrounds.size(0) == C && backgrounds.size(1) == features.size(2),
              "backgrounds must be [C,F]");
  Common cm;
  cm.C = C;
  cm.N = N;
  cm.L = Layout{int(payload.size(2)), int(features.size(2))};
  cm.grid.W = int(width);
  cm.grid.H = int(height);
  cm.grid.ts = int(tile_size);
  cm.grid.TW = int((width + tile_size - 1) / tile_size);
  cm.grid.TH = int((height + tile_size - 1) / tile_size);
  TORCH_CHECK(tile_offsets.numel() == C * cm.grid.tiles_per_cam() + 1, "tile offsets do not match the tile grid");
  return cm;
}

// Per-thread state of the contributor pass: transmittance, active flags, and per pixel a count, the first K ids
// and a ring buffer of the last K ids.
template <typename T>
struct ContribWork {
  TileBuffers<T> tb;
  std::vector<T> Tr, act;
  std::vector<int32_t> cnt, first, ring;
  ContribWork(int ts, int K)
      : tb(ts), Tr(tb.buf()), act(tb.buf()), cnt(tb.NP), first(size_t(tb.NP) * K), ring(size_t(tb.NP) * K) {}
};

// The ids of the first K and the last K primitives each pixel of a tile composites, by exactly the forward's
// rules (same arithmetic, so the same decisions); for LE3D's near-far regularizer (METHODS.md §3.3a).
template <typename T, typename Kern>
RECON_MULTIVERSION void contributors_tile(const Layout& L, const Grid& grid, const T* rec, const int32_t* toff,
                                          const int32_t* ids, const Consts<T>& k, int K, int64_t tile,
                                          ContribWork<T>& w, int32_t* out_first, int32_t* out_last) {
  using S = Simd<T>;
  using V = typename S::V;
  using M = typename S::M;
  constexpr int LW = S::W;
  const int S_ = L.stride(), RS = w.tb.RS;
  const TileGeom tg(grid, tile);
  std::fill(w.Tr.begin(), w.Tr.end(), T(1));
  std::fill(w.act.begin(), w.act.end(), T(0));
  std::fill(w.cnt.begin(), w.cnt.end(), 0);
  std::fill(w.first.begin(), w.first.end(), -1);
  for (int ly = 0; ly < tg.ph; ++ly)
    for (int lx = 0; lx < tg.pw; ++lx) w.act[ly * RS + lx] = T(1);
  int n_active = tg.pw * tg.ph;
  const V iota = S::iota();
  typename Kern::Prim prim;
  const int32_t s0 = toff[tile], s1 = toff[tile + 1];
  for (int32_t s = s0; s < s1 && n_active > 0; ++s) {
    const T* r = rec + int64_t(ids[s]) * S_;
    const T op = r[L.opacity()];
    T ex, ey;
    if (!prepare_record<T, Kern>(L, r, k.alpha_min, prim, ex, ey)) continue;
    int x0, x1, y0, y1;
    if (!footprint_pixels(grid, tg.tx, tg.ty, r[0], r[1], ex, ey, x0, x1, y0, y1)) continue;
    for (int y = y0; y <= y1; ++y) {
      int c0, c1;
      if (!row_columns<T, Kern>(prim, tg.px0, x0, x1, y, c0, c1)) continue;
      const V pyv = S::splat(T(y) + T(0.5));
      const int row = (y - tg.py0) * RS;
      for (int ci = c0; ci <= c1; ++ci) {
        const int p = row + ci * LW;
        const V actv = S::load(&w.act[p]);
        const M live = actv > T(0);
        if (!S::any(live)) continue;
        const V pxv = S::splat(T(tg.px0 + ci * LW) + T(0.5)) + iota;
        M m;
        V zv;
        const V kv = Kern::eval(prim, pxv, pyv, m, zv);
        m &= live;
        if (!S::any(m)) continue;
        const V alpha = S::vmin(S::splat(k.alpha_max), op * kv);
        m &= alpha >= k.alpha_min;
        if (!S::any(m)) continue;
        const V Tp = S::load(&w.Tr[p]);
        const V nT = Tp * (T(1) - alpha);
        const M stop = m & (nT <= k.t_eps);
        if (S::any(stop)) {
          n_active -= S::count(stop);
          S::store(&w.act[p], S::select(stop, S::splat(T(0)), actv));
          m &= ~stop;
        }
        for (int l = 0; l < LW; ++l) {
          if (!m[l]) continue;
          const int q = p + l, c = w.cnt[q];
          if (c < K) w.first[size_t(q) * K + c] = ids[s];
          w.ring[size_t(q) * K + c % K] = ids[s];
          w.cnt[q] = c + 1;
        }
        S::store(&w.Tr[p], S::select(m, nT, Tp));
      }
    }
  }
  for (int ly = 0; ly < tg.ph; ++ly)
    for (int lx = 0; lx < tg.pw; ++lx) {
      const int q = ly * RS + lx, n = w.cnt[q];
      const int64_t pix = tg.pixel(grid, ly, lx);
      for (int j = 0; j < K; ++j) {
        out_first[pix * K + j] = w.first[size_t(q) * K + j];
        const int at = n - K + j;  // the last K in compositing order, oldest first
        out_last[pix * K + j] = at >= 0 ? w.ring[size_t(q) * K + at % K] : -1;
      }
    }
}

template <typename T, typename Kern>
void contributors_impl(const Layout& L, const Grid& grid, const T* rec, const int32_t* toff, const int32_t* ids,
                       const Consts<T>& k, int K, int64_t C, int32_t* out_first, int32_t* out_last) {
  const int64_t n_tiles = C * grid.tiles_per_cam();
  const std::vector<int64_t> order = tile_order(toff, n_tiles);
#pragma omp parallel if (toff[n_tiles] >= kParallelMinPairs)
  {
    ContribWork<T> work(grid.ts, K);
#pragma omp for schedule(dynamic, 1)
    for (int64_t oi = 0; oi < n_tiles; ++oi)
      contributors_tile<T, Kern>(L, grid, rec, toff, ids, k, K, order[oi], work, out_first, out_last);
  }
}

// Radii to bin by (rasterize_bin_radii): the projection's, clipped to ceil of the kernel's bound.
template <typename T, typename Kern>
void bin_radii_impl(const T* m2d, const T* payload, int P, const T* opac, const T* depth, const int32_t* rad,
                    int64_t CN, T alpha_min, int32_t* out) {
#pragma omp parallel for schedule(dynamic, 4096) if (CN >= kParallelMinItems)
  for (int64_t g = 0; g < CN; ++g) {
    T ex, ey;
    if (rad[g] <= 0 || !primitive_bound<T, Kern>(m2d + g * 2, payload + g * P, opac[g], depth[g], alpha_min, ex, ey)) {
      out[g] = 0;
      continue;
    }
    const T r = std::ceil(std::max(ex, ey));
    out[g] = r < T(rad[g]) ? std::max(int32_t(r), int32_t(1)) : rad[g];
  }
}

}  // namespace

// Returns {features [C,H,W,F], depth [C,H,W] (sum w z), alpha [C,H,W], T_final [C,H,W], last [C,H,W],
// median index [C,H,W], median depth [C,H,W], distort_l1 [C,H,W], distort_ndc2 [C,H,W], sums [C,H,W,5]}; the
// depth, median and distortion tensors are empty unless asked for. `kernel_id` names the primitive kernel.
std::vector<at::Tensor> rasterize_forward(int64_t kernel_id, const at::Tensor& means2d, const at::Tensor& payload,
                                             const at::Tensor& opacities, const at::Tensor& depths,
                                             const at::Tensor& features, const at::Tensor& backgrounds,
                                             const at::Tensor& tile_offsets, const at::Tensor& ids,
                                             int64_t width, int64_t height, int64_t tile_size, bool want_depth,
                                             bool want_median, bool want_l1, bool want_ndc2, double alpha_max,
                                             double alpha_min, double t_eps, double ndc_near, double ndc_far) {
  const Common cm = check_common(means2d, payload, opacities, depths, features, backgrounds, tile_offsets, ids,
                                 width, height, tile_size);
  const int64_t C = cm.C, H = height, W = width, F = cm.L.F;
  auto opts = means2d.options();
  auto i32 = opts.dtype(at::kInt);
  auto empty = at::empty({0}, opts);
  auto out_feat = at::empty({C, H, W, F}, opts);
  auto out_depth = want_depth ? at::empty({C, H, W}, opts) : empty;
  auto out_alpha = at::empty({C, H, W}, opts);
  auto out_T = at::empty({C, H, W}, opts);
  auto out_last = at::empty({C, H, W}, i32);
  auto out_med_idx = want_median ? at::empty({C, H, W}, i32) : at::empty({0}, i32);
  auto out_med = want_median ? at::empty({C, H, W}, opts) : empty;
  auto out_l1 = want_l1 ? at::empty({C, H, W}, opts) : empty;
  auto out_ndc2 = want_ndc2 ? at::empty({C, H, W}, opts) : empty;
  auto out_sums = (want_l1 || want_ndc2) ? at::zeros({C, H, W, 5}, opts) : empty;
  const RasterConsts k{alpha_max, alpha_min, t_eps, ndc_near, ndc_far};
  const Flags fl{want_depth, want_median, want_l1, want_ndc2};
  AT_DISPATCH_FLOATING_TYPES(means2d.scalar_type(), "rasterize_forward", [&] {
    using T = scalar_t;
    std::vector<T> rec;
    pack_records<T>(cm.L, C * cm.N, means2d.data_ptr<T>(), payload.data_ptr<T>(), opacities.data_ptr<T>(),
                    depths.data_ptr<T>(), features.data_ptr<T>(), rec);
    FwdArgs<T> a{cm.L,
                 cm.grid,
                 rec.data(),
                 backgrounds.data_ptr<T>(),
                 tile_offsets.data_ptr<int32_t>(),
                 ids.data_ptr<int32_t>(),
                 fl,
                 Consts<T>(k),
                 out_feat.data_ptr<T>(),
                 want_depth ? out_depth.data_ptr<T>() : nullptr,
                 out_alpha.data_ptr<T>(),
                 out_T.data_ptr<T>(),
                 want_median ? out_med.data_ptr<T>() : nullptr,
                 want_l1 ? out_l1.data_ptr<T>() : nullptr,
                 want_ndc2 ? out_ndc2.data_ptr<T>() : nullptr,
                 (want_l1 || want_ndc2) ? out_sums.data_ptr<T>() : nullptr,
                 out_last.data_ptr<int32_t>(),
                 want_median ? out_med_idx.data_ptr<int32_t>() : nullptr};
    dispatch_kernel<T>(kernel_id, cm.L.P, cm.L.F, [&]<typename Kern, int FC>() {
      fill_bounds<T, Kern>(cm.L, C * cm.N, T(alpha_min), rec);
      forward_impl<T, Kern, FC>(a, C);
    });
  });
  return {out_feat, out_depth, out_alpha, out_T, out_last, out_med_idx, out_med, out_l1, out_ndc2, out_sums};
}

// Returns the per-primitive gradient rows [C,N,8+P+F]: d means2d (2), d payload (P), d opacity, d depth,
// d features (F), sum over pixels of |d means2d| (2). Gradient maps that are empty count as zero.
at::Tensor rasterize_backward(int64_t kernel_id, const at::Tensor& means2d, const at::Tensor& payload,
                                 const at::Tensor& opacities, const at::Tensor& depths,
                                 const at::Tensor& features, const at::Tensor& backgrounds,
                                 const at::Tensor& tile_offsets, const at::Tensor& ids,
                                 const at::Tensor& slot_pos, const at::Tensor& gauss_offsets, int64_t width,
                                 int64_t height, int64_t tile_size, const at::Tensor& T_final,
                                 const at::Tensor& last, const at::Tensor& median_idx,
                                 const at::Tensor& sums, const at::Tensor& g_feat,
                                 const at::Tensor& g_depth, const at::Tensor& g_alpha, const at::Tensor& g_median,
                                 const at::Tensor& g_l1, const at::Tensor& g_ndc2, double alpha_max,
                                 double alpha_min, double t_eps, double ndc_near, double ndc_far) {
  const Common cm = check_common(means2d, payload, opacities, depths, features, backgrounds, tile_offsets, ids,
                                 width, height, tile_size);
  for (const auto* t : {&slot_pos, &gauss_offsets, &T_final, &last, &median_idx, &sums, &g_feat, &g_depth, &g_alpha,
                        &g_median, &g_l1, &g_ndc2})
    RECON_CHECK_INPUT(*t);
  TORCH_CHECK(g_feat.sizes() == at::IntArrayRef({cm.C, height, width, cm.L.F}), "feature gradient shape");
  TORCH_CHECK(g_median.numel() == 0 || median_idx.numel() > 0, "median gradient without a median forward");
  TORCH_CHECK((g_l1.numel() == 0 && g_ndc2.numel() == 0) || sums.numel() > 0,
              "distortion gradient without a distortion forward");
  const GradLayout GL{cm.L.P, cm.L.F};
  auto out = at::empty({cm.C, cm.N, GL.stride()}, means2d.options());
  const RasterConsts k{alpha_max, alpha_min, t_eps, ndc_near, ndc_far};
  AT_DISPATCH_FLOATING_TYPES(means2d.scalar_type(), "rasterize_backward", [&] {
    using T = scalar_t;
    std::vector<T> rec;
    pack_records<T>(cm.L, cm.C * cm.N, means2d.data_ptr<T>(), payload.data_ptr<T>(), opacities.data_ptr<T>(),
                    depths.data_ptr<T>(), features.data_ptr<T>(), rec);
    const int32_t* toff = tile_offsets.data_ptr<int32_t>();
    const int64_t M = toff[cm.C * cm.grid.tiles_per_cam()];
    std::unique_ptr<T[]> slot_grad(new T[size_t(std::max<int64_t>(M, 1)) * GL.stride()]);
    BwdArgs<T> a{cm.L,
                 cm.grid,
                 rec.data(),
                 backgrounds.data_ptr<T>(),
                 toff,
                 ids.data_ptr<int32_t>(),
                 slot_pos.data_ptr<int32_t>(),
                 last.data_ptr<int32_t>(),
                 opt_ptr<int32_t>(median_idx),
                 T_final.data_ptr<T>(),
                 opt_ptr<T>(sums),
                 g_feat.data_ptr<T>(),
                 opt_ptr<T>(g_depth),
                 opt_ptr<T>(g_alpha),
                 opt_ptr<T>(g_median),
                 opt_ptr<T>(g_l1),
                 opt_ptr<T>(g_ndc2),
                 Consts<T>(k),
                 slot_grad.get()};
    dispatch_kernel<T>(kernel_id, cm.L.P, cm.L.F, [&]<typename Kern, int FC>() {
      fill_bounds<T, Kern>(cm.L, cm.C * cm.N, T(alpha_min), rec);
      backward_impl<T, Kern, FC>(a, cm.C, cm.N, gauss_offsets.data_ptr<int64_t>(), out.data_ptr<T>());
    });
  });
  return out;
}

// Returns {first [C,H,W,K], last [C,H,W,K]} int32: the camera-flattened ids (c*N + n) of the first K and the last
// K primitives each pixel composites, both in compositing order, -1 where a pixel composites fewer. No gradient.
std::vector<at::Tensor> rasterize_contributors(int64_t kernel_id, const at::Tensor& means2d, const at::Tensor& payload,
                                                  const at::Tensor& opacities, const at::Tensor& depths,
                                                  const at::Tensor& features, const at::Tensor& backgrounds,
                                                  const at::Tensor& tile_offsets, const at::Tensor& ids,
                                                  int64_t width, int64_t height, int64_t tile_size, int64_t k,
                                                  double alpha_max, double alpha_min, double t_eps) {
  const Common cm = check_common(means2d, payload, opacities, depths, features, backgrounds, tile_offsets, ids,
                                 width, height, tile_size);
  TORCH_CHECK(k >= 1, "contributors: k must be at least 1");
  const int64_t C = cm.C, H = height, W = width;
  auto i32 = means2d.options().dtype(at::kInt);
  auto out_first = at::empty({C, H, W, k}, i32);
  auto out_last = at::empty({C, H, W, k}, i32);
  const RasterConsts rk{alpha_max, alpha_min, t_eps, 0.2, 100.0};
  AT_DISPATCH_FLOATING_TYPES(means2d.scalar_type(), "rasterize_contributors", [&] {
    using T = scalar_t;
    std::vector<T> rec;
    pack_records<T>(cm.L, C * cm.N, means2d.data_ptr<T>(), payload.data_ptr<T>(), opacities.data_ptr<T>(),
                    depths.data_ptr<T>(), features.data_ptr<T>(), rec);
    dispatch_kernel<T>(kernel_id, cm.L.P, 0, [&]<typename Kern, int FC>() {
      fill_bounds<T, Kern>(cm.L, C * cm.N, T(alpha_min), rec);
      contributors_impl<T, Kern>(cm.L, cm.grid, rec.data(), tile_offsets.data_ptr<int32_t>(),
                                 ids.data_ptr<int32_t>(), Consts<T>(rk), int(k), C, out_first.data_ptr<int32_t>(),
                                 out_last.data_ptr<int32_t>());
    });
  });
  return {out_first, out_last};
}

// Returns the radii [C,N] int32 to bin by: the projection's radii clipped to the box each primitive's kernel can
// reach at its opacity (0 where it never reaches alpha_min). The same box clips the pixels the compositor visits,
// so the maps do not change; only primitives whose projected radius is a loose bound need it (convexes).
at::Tensor rasterize_bin_radii(int64_t kernel_id, const at::Tensor& means2d, const at::Tensor& payload,
                               const at::Tensor& opacities, const at::Tensor& depths, const at::Tensor& radii,
                               double alpha_min) {
  for (const auto* t : {&means2d, &payload, &opacities, &depths, &radii}) RECON_CHECK_INPUT(*t);
  TORCH_CHECK(radii.scalar_type() == at::kInt && radii.sizes() == depths.sizes() &&
                  opacities.sizes() == depths.sizes() && payload.dim() == 3,
              "bin_radii: radii [C,N] int32, opacities and depths [C,N], payload [C,N,P]");
  auto out = at::empty_like(radii);
  AT_DISPATCH_FLOATING_TYPES(means2d.scalar_type(), "rasterize_bin_radii", [&] {
    using T = scalar_t;
    dispatch_kernel<T>(kernel_id, int(payload.size(2)), 0, [&]<typename Kern, int FC>() {
      bin_radii_impl<T, Kern>(means2d.data_ptr<T>(), payload.data_ptr<T>(), int(payload.size(2)),
                              opacities.data_ptr<T>(), depths.data_ptr<T>(), radii.data_ptr<int32_t>(),
                              radii.numel(), T(alpha_min), out.data_ptr<int32_t>());
    });
  });
  return out;
}

}  // namespace recon
