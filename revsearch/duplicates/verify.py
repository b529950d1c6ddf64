"""Stage two: accept a candidate pair only when one image is an edited copy of the other.

Works on the small greyscale thumbnails (:mod:`revsearch.storage.thumbs`) the index stores, so it never
decodes the photos. For a pair (a, b):

1. **Local features.** SIFT keypoints of ``a``, of ``b`` and of ``b`` mirrored (OpenCV, no
   weights), matched with Lowe's ratio test.
2. **A constrained geometric fit.** RANSAC fits a similarity (scale, rotation, shift) mapping
   ``b`` (or its mirror) onto ``a``; it must have at least :data:`MIN_INLIERS` inliers, a rotation
   within :data:`MAX_TILT` degrees of a multiple of 90 degrees, a scale within
   [1/:data:`MAX_SCALE`, :data:`MAX_SCALE`], and one image must lie (mostly) inside the other.
3. **A pixel check on the aligned overlap.** The sharper image is warped into the frame of the
   other (blurred to its resolution first). The overlap is cut into tiles; on each tile with some
   texture the two images are compared by zero-mean normalised correlation (blind to brightness,
   contrast, colour and grey-scale changes), after a common light blur (JPEG artefacts). The pair
   is a copy when most tiles agree (:data:`TILE_AGREE` of them): a caption, a logo or a border
   over part of the picture leaves the other tiles agreeing. Two shots of one scene (another
   view, a neighbouring burst frame) do not align pixel for pixel once the similarity is
   fitted: parallax, perspective and motion leave most textured tiles disagreeing.
4. **Fallback** for images with too few features (flat, tiny): the eight turns and mirrors of
   ``b`` are compared whole with ``a`` (same aspect ratio only), by the same tile test with a
   stricter bar.

The decision is a :class:`Verdict`, which also says why (the transform, inliers, tiles).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core.errors import OptionalDependencyError
from ..storage.thumbs import THUMB_SIDE

logger = logging.getLogger(__name__)

__all__ = ["FeatureCache", "Features", "Verdict", "features", "verify_pair", "verify_pairs", "verify_thumbnails"]

#: Fewest RANSAC inliers for a geometric match.
MIN_INLIERS = 8
#: Largest departure (degrees) of the fitted rotation from a multiple of 90 degrees.
MAX_TILT = 16.0
#: Largest scale change between the two thumbnails (either way).
MAX_SCALE = 6.0
#: RANSAC reprojection tolerance, in thumbnail pixels.
RANSAC_PIXELS = 3.0
#: Lowe's ratio for descriptor matches.
RATIO = 0.8
#: Tile side (pixels of the comparison frame) of the pixel check.
TILE = 12
#: A tile counts when it is this much inside the overlap.
TILE_INSIDE = 0.9
#: Correlation from which a tile agrees.
TILE_NCC = 0.75
#: Fraction of the textured tiles that must agree.
TILE_AGREE = 0.6
#: Fewest textured tiles for a decision.
MIN_TILES = 6
#: Fraction of the smaller image that must lie inside the other (once aligned).
MIN_COVER = 0.55
#: Largest median distance (pixels of the coarser thumbnail) between a's keypoints and b's
#: mapped by the fitted similarity: copies fit to 0.02-0.27 px (0.55 for a tiny JPEG of quality
#: 15), other frames and views to 0.3-2 px (perspective, parallax, motion).
MAX_RESIDUAL = 0.30
#: Above this residual (and up to MAX_RESIDUAL) the aligned tiles must agree closely too
#: (TILE_AGREE_CLOSE of them): burst frames matched with a copy shown smaller fit to 0.22-0.30 px
#: with 72-87% of the tiles agreeing; copies fitting that loosely agree on 88% or more.
MAX_RESIDUAL_LOOSE = 0.22
TILE_AGREE_CLOSE = 0.88
#: ... or up to this when the aligned details agree closely (a small, heavily compressed copy
#: whose keypoints are less precise): high-pass correlation >= SHARP_EXACT, 90% of tiles agreeing,
#: and both thumbnails at the same scale (a copy shown smaller, in bars or a frame, compares at a
#: coarse resolution where other frames agree too).
MAX_RESIDUAL_SHARP = 0.55
SHARP_EXACT = 0.93
#: ... or when one image is a small photo (smaller than a stored thumbnail, whatever the scale:
#: its keypoints are imprecise) and its aligned details agree this closely.
SHARP_EXACT_SMALL = 0.88
#: Smallest median correlation of the high-pass (detail) images over the textured tiles.
MIN_SHARP = 0.85
#: A fitted rotation this close (degrees) to a multiple of 90 is snapped to it.
SNAP_DEGREES = 1.5
#: Keypoints kept per thumbnail.
MAX_KEYPOINTS = 400
#: A pair with a photo smaller than a stored thumbnail (a tiny copy, whose keypoints are imprecise)
#: is verified on both thumbnails reduced to this longer side, where such a copy and its original
#: compare at equal scale (measured: benchmarks/duplicates.py copies, tiny q15 JPEGs).
COARSE_SIDE = 128
#: Fallback (too few features): correlation from which a tile agrees, and the fraction that must.
FALLBACK_NCC = 0.85
FALLBACK_AGREE = 0.8
FALLBACK_SHARP = 0.9


def require_cv2() -> Any:
    """Import OpenCV, or raise :class:`OptionalDependencyError` saying how to install it."""
    try:
        import cv2
    except ImportError as e:
        raise OptionalDependencyError(
            "verifying duplicates needs OpenCV, an optional extra: pip install revsearch[duplicates] "
            f"(or pip install opencv-python-headless) ({e})"
        ) from None
    return cv2


@dataclass
class Features:
    """SIFT keypoints of a thumbnail and of its mirror image.

    Attributes
    ----------
    image : numpy.ndarray
        Shape (h, w) uint8, the thumbnail.
    points, mirror_points : numpy.ndarray
        Shape (p, 2) float32 keypoint positions (x, y) in the thumbnail's pixels (the mirror's
        are in the mirrored image's pixels).
    desc, mirror_desc : numpy.ndarray or None
        Shape (p, 128) float32 SIFT descriptors (None without keypoints).
    """

    image: np.ndarray
    points: np.ndarray
    desc: np.ndarray | None
    mirror_points: np.ndarray
    mirror_desc: np.ndarray | None
    _coarse: Features | None = field(default=None, repr=False, compare=False)

    def coarse(self) -> Features:
        """The features of this thumbnail reduced to a longer side of :data:`COARSE_SIDE` (made once)."""
        if self._coarse is None:
            h, w = self.image.shape
            if max(h, w) <= COARSE_SIDE:
                self._coarse = self
            else:
                cv2 = require_cv2()
                f = COARSE_SIDE / max(h, w)
                size = (max(1, round(w * f)), max(1, round(h * f)))
                self._coarse = features(cv2.resize(self.image, size, interpolation=cv2.INTER_AREA))
        return self._coarse

    @property
    def nbytes(self) -> int:
        return int(
            self.image.nbytes + self.points.nbytes + self.mirror_points.nbytes
            + (0 if self.desc is None else self.desc.nbytes) + (0 if self.mirror_desc is None else self.mirror_desc.nbytes)
        )


_SIFT: dict[int, Any] = {}


def _sift() -> Any:
    import threading

    key = threading.get_ident()
    s = _SIFT.get(key)
    if s is None:
        cv2 = require_cv2()
        s = _SIFT[key] = cv2.SIFT_create(nfeatures=MAX_KEYPOINTS, contrastThreshold=0.02)
    return s


def _detect(img: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    kps, desc = _sift().detectAndCompute(img, None)
    pts = np.array([k.pt for k in kps], np.float32).reshape(-1, 2)
    return pts, (None if desc is None or not len(kps) else desc.astype(np.float32))


#: SIFT orientation bins of a mirror image: bin o of the original becomes bin (8 - o) % 8.
_MIRROR_BINS = (8 - np.arange(8)) % 8


def _mirror_desc(desc: np.ndarray) -> np.ndarray:
    """SIFT descriptors (p, 128) as the mirror image's keypoints would have them: the 4 x 4 grid's
    rows reversed (OpenCV's layout) and the 8 orientation bins reflected (no second detection)."""
    return np.ascontiguousarray(desc.reshape(-1, 4, 4, 8)[:, ::-1][..., _MIRROR_BINS].reshape(-1, 128))


def features(thumb: np.ndarray) -> Features:
    """The local features of a thumbnail (and of its mirror image).

    Parameters
    ----------
    thumb : numpy.ndarray
        Shape (h, w) uint8.

    Returns
    -------
    Features
    """
    img = np.ascontiguousarray(thumb, np.uint8)
    pts, desc = _detect(img)
    mpts = pts.copy()
    mpts[:, 0] = (img.shape[1] - 1) - mpts[:, 0]
    mdesc = None if desc is None else _mirror_desc(desc)
    return Features(img, pts, desc, mpts, mdesc)


@dataclass
class Verdict:
    """Whether b is an edited copy of a (or a of b), and why.

    Attributes
    ----------
    accepted : bool
    method : str
        ``"features"`` (geometric fit), ``"whole"`` (the fallback) or ``"none"``.
    matrix : numpy.ndarray or None
        Shape (2, 3): maps b's thumbnail pixels (mirrored first if ``mirrored``) onto a's.
    mirrored : bool
    rotation : float
        Degrees of the fitted rotation.
    scale : float
        Scale of the fit (b's thumbnail pixels to a's).
    inliers : int
    tiles : int
        Textured tiles compared.
    agree : float
        Fraction of them that agree.
    cover : float
        Fraction of the smaller image inside the other.
    residual : float
        Median distance (pixels) of the matched keypoints from the fitted similarity.
    sharp : float
        Median high-pass correlation of the aligned tiles.
    reason : str
        Why it was refused (empty when accepted).
    a_shape, b_shape : (int, int) or None
        (h, w) of the two thumbnails ``matrix`` refers to.
    """

    accepted: bool
    method: str = "none"
    matrix: np.ndarray | None = None
    mirrored: bool = False
    rotation: float = 0.0
    scale: float = 1.0
    inliers: int = 0
    tiles: int = 0
    agree: float = 0.0
    cover: float = 0.0
    residual: float = float("nan")
    sharp: float = 0.0
    reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    a_shape: tuple[int, int] | None = None
    b_shape: tuple[int, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "accepted": self.accepted, "method": self.method, "mirrored": self.mirrored,
            "rotation": round(self.rotation, 2), "scale": round(self.scale, 4), "inliers": self.inliers,
            "tiles": self.tiles, "agree": round(self.agree, 3), "cover": round(self.cover, 3),
            "residual": None if math.isnan(self.residual) else round(self.residual, 3), "sharp": round(self.sharp, 3),
            "reason": self.reason,
            "matrix": None if self.matrix is None else [[round(float(v), 5) for v in r] for r in self.matrix],
        }


def _match(cv2: Any, da: np.ndarray | None, db: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Indices (ia, ib) of ratio-test matches, each b keypoint used once."""
    if da is None or db is None or len(da) < 2 or len(db) < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    m = cv2.BFMatcher(cv2.NORM_L2).knnMatch(db, da, k=2)
    ia, ib = [], []
    for pair in m:
        if len(pair) == 2 and pair[0].distance < RATIO * pair[1].distance:
            ib.append(pair[0].queryIdx)
            ia.append(pair[0].trainIdx)
    return np.asarray(ia, np.int64), np.asarray(ib, np.int64)


def _fit(cv2: Any, pa: np.ndarray, pb: np.ndarray) -> tuple[np.ndarray | None, int]:
    if len(pa) < MIN_INLIERS:
        return None, 0
    M, inl = cv2.estimateAffinePartial2D(
        pb, pa, method=cv2.RANSAC, ransacReprojThreshold=RANSAC_PIXELS, maxIters=2000, confidence=0.995,
        refineIters=10,
    )
    if M is None or inl is None:
        return None, 0
    return M.astype(np.float64), int(inl.sum())


def _angle_scale(M: np.ndarray) -> tuple[float, float]:
    s = math.hypot(M[0, 0], M[1, 0])
    return math.degrees(math.atan2(M[1, 0], M[0, 0])), s


def _tilt(angle: float) -> float:
    return abs((angle + 45.0) % 90.0 - 45.0)


def _snapped(M: np.ndarray, angle: float, pb: np.ndarray, pa: np.ndarray) -> np.ndarray:
    """The similarity with the rotation set to the nearest multiple of 90 degrees, scale and shift refitted."""
    k = round(angle / 90.0) % 4
    c, s_ = [(1, 0), (0, 1), (-1, 0), (0, -1)][k]
    R = np.array([[c, -s_], [s_, c]], np.float64)
    q = pb.astype(np.float64) @ R.T
    qm, pm = q.mean(axis=0), pa.astype(np.float64).mean(axis=0)
    denom = float(((q - qm) ** 2).sum())
    scale = float(((q - qm) * (pa - pm)).sum() / denom) if denom > 1e-9 else math.hypot(M[0, 0], M[1, 0])
    if not scale > 0:
        return M
    out = np.zeros((2, 3))
    out[:, :2] = scale * R
    out[:, 2] = pm - scale * qm
    return out


def _invert(M: np.ndarray) -> np.ndarray:
    A = np.vstack([M, [0.0, 0.0, 1.0]])
    return np.linalg.inv(A)[:2]


def _tile_test(
    cv2: Any, ref: np.ndarray, moving: np.ndarray, M: np.ndarray, scale: float
) -> tuple[int, float, float, np.ndarray, float]:
    """Warp ``moving`` into ``ref``'s frame with M (moving -> ref, ``scale`` <= 1: shrinks) and compare
    tiles. Returns (textured tiles, fraction agreeing, cover of the smaller image, per-tile NCC map
    (nan where not compared), median high-pass correlation of the textured tiles)."""
    h, w = ref.shape
    mov = moving.astype(np.float32)
    if scale < 0.75:  # shrinking: blur to the target resolution first (no aliasing)
        sigma = 0.5 * math.sqrt(max(1e-6, 1.0 / scale**2 - 1.0))
        mov = cv2.GaussianBlur(mov, (0, 0), sigma)
    warped = cv2.warpAffine(mov, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    inside = cv2.warpAffine(
        np.ones(moving.shape, np.float32), M, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    ) > 0.99
    inside = cv2.erode(inside.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    moved_area = moving.shape[0] * moving.shape[1] * scale * scale
    cover = float(inside.sum()) / max(1.0, min(float(h * w), moved_area))
    a = cv2.GaussianBlur(ref.astype(np.float32), (0, 0), 0.8)
    b = cv2.GaussianBlur(warped, (0, 0), 0.8)
    t = TILE
    ny, nx = h // t, w // t
    ncc = np.full((max(ny, 0), max(nx, 0)), np.nan, np.float32)
    if ny == 0 or nx == 0:
        return 0, 0.0, cover, ncc, 0.0
    oy, ox = (h - ny * t) // 2, (w - nx * t) // 2
    A = a[oy : oy + ny * t, ox : ox + nx * t].reshape(ny, t, nx, t).transpose(0, 2, 1, 3).reshape(ny, nx, t * t)
    B = b[oy : oy + ny * t, ox : ox + nx * t].reshape(ny, t, nx, t).transpose(0, 2, 1, 3).reshape(ny, nx, t * t)
    I = inside[oy : oy + ny * t, ox : ox + nx * t].reshape(ny, t, nx, t).transpose(0, 2, 1, 3).reshape(ny, nx, t * t)
    frac = I.mean(axis=2)
    A = A - A.mean(axis=2, keepdims=True)
    B = B - B.mean(axis=2, keepdims=True)
    sa, sb = np.sqrt((A * A).sum(axis=2)), np.sqrt((B * B).sum(axis=2))
    textured = (frac >= TILE_INSIDE) & (sa / t >= 4.0) & (sb / t >= 2.0)
    corr = (A * B).sum(axis=2) / np.maximum(sa * sb, 1e-6)
    ncc[textured] = corr[textured]
    n = int(textured.sum())
    agree = float((corr[textured] >= TILE_NCC).mean()) if n else 0.0
    ha = a - cv2.GaussianBlur(a, (0, 0), 2.0)
    hb = b - cv2.GaussianBlur(b, (0, 0), 2.0)
    HA = ha[oy : oy + ny * t, ox : ox + nx * t].reshape(ny, t, nx, t).transpose(0, 2, 1, 3).reshape(ny, nx, t * t)
    HB = hb[oy : oy + ny * t, ox : ox + nx * t].reshape(ny, t, nx, t).transpose(0, 2, 1, 3).reshape(ny, nx, t * t)
    hc = (HA * HB).sum(axis=2) / np.maximum(np.sqrt((HA * HA).sum(axis=2) * (HB * HB).sum(axis=2)), 1e-6)
    sharp = float(np.median(hc[textured])) if n else 0.0
    return n, agree, cover, ncc, sharp


def _pixel_check(cv2: Any, a: np.ndarray, b: np.ndarray, M: np.ndarray) -> tuple[int, float, float, np.ndarray, float]:
    """M maps b -> a. Compare in the frame of the image with fewer pixels of the shared content."""
    _, s = _angle_scale(M)
    if s <= 1.0:
        return _tile_test(cv2, a, b, M, s)
    return _tile_test(cv2, b, a, _invert(M), 1.0 / s)


def _whole(cv2: Any, a: np.ndarray, b: np.ndarray) -> Verdict:
    """Fallback: the 8 turns/mirrors of b against a, whole images of the same aspect ratio."""
    best = Verdict(False, "whole", reason="too few features and no whole-image match")
    ha, wa = a.shape
    for mirrored in (False, True):
        bb = b[:, ::-1] if mirrored else b
        for k in range(4):
            r = np.ascontiguousarray(np.rot90(bb, k))
            hr, wr = r.shape
            if abs(math.log((wa / ha) / (wr / hr))) > 0.05:
                continue
            s = wa / wr
            M = np.array([[s, 0.0, 0.0], [0.0, s, 0.0]])
            ref, mov, MM, sc = (a, r, M, s) if s <= 1 else (r, a, _invert(M), 1 / s)
            n, agree, cover, _, sharp = _tile_test(cv2, ref, mov, MM, sc)
            if n >= MIN_TILES and agree > best.agree:
                ok = agree >= FALLBACK_AGREE and sharp >= FALLBACK_SHARP
                best = Verdict(ok, "whole", None, mirrored, 90.0 * k, s, 0, n, agree, cover, extra={"sharp": sharp})
    if not best.accepted and best.reason == "" and best.tiles:
        best.reason = f"whole images differ ({best.agree:.0%} of tiles agree)"
    return best


def verify_pair(fa: Features, fb: Features) -> Verdict:
    """Decide whether one of two thumbnails is an edited copy of the other (see the module docstring).

    Parameters
    ----------
    fa, fb : Features
        From :func:`features`.

    Returns
    -------
    Verdict
        Its ``matrix`` maps ``fb``'s thumbnail (mirrored first if ``mirrored``) onto ``fa``'s.
    """
    if min(max(fa.image.shape), max(fb.image.shape)) < THUMB_SIDE and max(max(fa.image.shape), max(fb.image.shape)) > COARSE_SIDE:
        fa, fb = fa.coarse(), fb.coarse()  # a small photo: compared at the coarse side (its matrix too)
        v = _verify(fa, fb, COARSE_SIDE)
    else:
        v = _verify(fa, fb, THUMB_SIDE)
    v.a_shape, v.b_shape = tuple(fa.image.shape), tuple(fb.image.shape)  # type: ignore[assignment]
    return v


def _verify(fa: Features, fb: Features, side: int) -> Verdict:
    """Decide whether one of two thumbnails is an edited copy of the other.

    Parameters
    ----------
    fa, fb : Features
        From :func:`features`.
    side : int
        Longer side of a full-size thumbnail at this comparison (smaller: a small photo).

    Returns
    -------
    Verdict
    """
    cv2 = require_cv2()
    a, b = fa.image, fb.image
    best: Verdict | None = None
    for mirrored in (False, True):
        pb_all, db = (fb.mirror_points, fb.mirror_desc) if mirrored else (fb.points, fb.desc)
        ia, ib = _match(cv2, fa.desc, db)
        if len(ia) < MIN_INLIERS:
            continue
        M, inl = _fit(cv2, fa.points[ia], pb_all[ib])
        if M is None or inl < MIN_INLIERS:
            continue
        if best is not None and best.inliers >= inl:
            continue
        angle, s = _angle_scale(M)
        v = Verdict(False, "features", M, mirrored, angle, s, inl)
        res = np.hypot(*(pb_all[ib] @ M[:, :2].T + M[:, 2] - fa.points[ia]).T)
        if _tilt(angle) <= SNAP_DEGREES:  # an exact turn: refit the scale and shift with the rotation snapped
            M = _snapped(M, angle, pb_all[ib][res < RANSAC_PIXELS], fa.points[ia][res < RANSAC_PIXELS])
            v.matrix = M
        # how exactly the similarity explains the matches, in pixels of the coarser thumbnail
        v.residual = float(np.median(res[res < RANSAC_PIXELS])) / max(1.0, s)
        if _tilt(angle) > MAX_TILT:
            v.reason = f"rotation {angle:.0f} degrees is not near a multiple of 90"
        elif not (1.0 / MAX_SCALE <= s <= MAX_SCALE):
            v.reason = f"scale {s:.2f} out of range"
        else:
            bb = np.ascontiguousarray(b[:, ::-1]) if mirrored else b
            n, agree, cover, _, sharp = _pixel_check(cv2, a, bb, M)
            v.tiles, v.agree, v.cover, v.sharp = n, agree, cover, sharp
            small = min(max(a.shape), max(b.shape)) < side  # a photo smaller than a thumbnail
            exact = v.residual <= MAX_RESIDUAL_LOOSE or (v.residual <= MAX_RESIDUAL and agree >= TILE_AGREE_CLOSE) or (
                v.residual <= MAX_RESIDUAL_SHARP and agree >= 0.9 and (
                    (sharp >= SHARP_EXACT and abs(math.log(s)) < 0.1) or (small and sharp >= SHARP_EXACT_SMALL)
                )
            )
            if not exact:
                v.reason = f"the matches fit a similarity only to {v.residual:.2f} px (another view or frame)"
            elif cover < MIN_COVER:
                v.reason = f"only {cover:.0%} of one image lies inside the other"
            elif n < MIN_TILES:
                v.reason = f"too little texture in the overlap ({n} tiles)"
            elif agree < TILE_AGREE:
                v.reason = f"the aligned pixels differ ({agree:.0%} of {n} tiles agree)"
            elif sharp < MIN_SHARP:
                v.reason = f"the aligned details differ (high-pass correlation {sharp:.2f})"
            else:
                v.accepted = True
        best = v
        if v.accepted:
            return v
    if best is not None and best.inliers >= 2 * MIN_INLIERS:
        return best  # a confident geometric answer: no fallback
    whole = _whole(cv2, a, b)
    if whole.accepted or best is None:
        return whole
    return best


def verify_thumbnails(a: np.ndarray, b: np.ndarray) -> Verdict:
    """:func:`verify_pair` on two (h, w) uint8 thumbnails."""
    return verify_pair(features(a), features(b))


class FeatureCache:
    """Features of thumbnails by row, computed once and kept (least recently used first out).

    Parameters
    ----------
    thumb_of : callable
        ``thumb_of(row)`` -> (h, w) uint8 thumbnail or None (unreadable).
    max_items : int, default 20000
        Rows kept (about 100 KiB each).
    """

    def __init__(self, thumb_of: Any, max_items: int = 20000) -> None:
        import threading
        from collections import OrderedDict

        self.thumb_of = thumb_of
        self.max_items = int(max_items)
        self._items: OrderedDict[int, Features | None] = OrderedDict()
        self._lock = threading.Lock()
        self.computed = 0

    def get(self, row: int) -> Features | None:
        with self._lock:
            if row in self._items:
                self._items.move_to_end(row)
                return self._items[row]
        t = self.thumb_of(row)
        f = features(t) if t is not None else None
        with self._lock:
            self.computed += 1
            self._items[row] = f
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)
        return f


def verify_pairs(
    pairs: np.ndarray, cache: FeatureCache, *, workers: int | None = None, progress: bool = False,
) -> list[Verdict]:
    """:func:`verify_pair` on many candidate pairs, in threads (OpenCV releases the GIL).

    Parameters
    ----------
    pairs : numpy.ndarray
        Shape (p, 2) int rows.
    cache : FeatureCache
    workers : int, optional
        Threads (default: the number of CPUs, at most 8).
    progress : bool, default False

    Returns
    -------
    list of Verdict
        Aligned with ``pairs``; a pair with an unreadable image is refused with that reason.
    """
    import os
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    require_cv2()  # a clear error before the threads start
    workers = workers or min(8, os.cpu_count() or 1)
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)

    def one(p: np.ndarray) -> Verdict:
        fa, fb = cache.get(int(p[0])), cache.get(int(p[1]))
        if fa is None or fb is None:
            return Verdict(False, reason="an image has no thumbnail (unreadable or missing)")
        return verify_pair(fa, fb)

    out: list[Verdict] = []
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="revsearch-verify") as pool, tqdm(
        total=len(pairs), desc="verifying", unit="pair", disable=not progress
    ) as bar:
        for s0 in range(0, len(pairs), 1024):
            chunk = pairs[s0 : s0 + 1024]
            out.extend(pool.map(one, chunk))
            bar.update(len(chunk))
    return out
