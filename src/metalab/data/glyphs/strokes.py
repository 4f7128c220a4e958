"""Characters of the glyphs set: each alphabet's stroke style, and strokes (chains of one or two
cubic Bezier segments, 7 control points) and characters of up to 4 strokes in the unit box
[-1, 1]^2 (y points down)."""

from __future__ import annotations

import math

import numpy as np

KINDS = ("line", "arc", "hook", "loop", "dot", "corner", "wave")
MAX_STROKES = 4
N_CTRL = 7  # two cubic segments sharing their middle point


def _bezier(ctrl: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Points of a cubic Bezier ``ctrl [4, 2]`` at parameters ``t [T]``."""
    u = 1.0 - t
    w = np.stack([u**3, 3 * u * u * t, 3 * u * t * t, t**3], axis=-1)
    return w @ ctrl


def _stroke_points(ctrl: np.ndarray, nseg: int, n: int = 12) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)
    pts = [_bezier(ctrl[0:4], t)]
    if nseg == 2:
        pts.append(_bezier(ctrl[3:7], t))
    return np.concatenate(pts)


def _arc_segment(center, radius, aspect, a, b) -> np.ndarray:
    """Four control points of one cubic approximating an elliptic arc from angle a to b."""
    k = 4.0 / 3.0 * math.tan((b - a) / 4.0)
    scale = np.array([radius, radius * aspect])
    p0 = np.array([math.cos(a), math.sin(a)])
    p3 = np.array([math.cos(b), math.sin(b)])
    p1 = p0 + k * np.array([-math.sin(a), math.cos(a)])
    p2 = p3 - k * np.array([-math.sin(b), math.cos(b)])
    return np.stack([p0, p1, p2, p3]) * scale + np.asarray(center)


def _arc_ctrl(center, radius, aspect, a0, sweep) -> np.ndarray:
    """Seven control points of an elliptic arc from angle ``a0`` over ``sweep`` (two segments)."""
    first = _arc_segment(center, radius, aspect, a0, a0 + sweep / 2)
    second = _arc_segment(center, radius, aspect, a0 + sweep / 2, a0 + sweep)
    return np.concatenate([first, second[1:]])


def _line_ctrl(p0, p1, bend) -> np.ndarray:
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    d = p1 - p0
    nrm = np.array([-d[1], d[0]])
    c1 = p0 + d / 3 + nrm * bend
    c2 = p0 + 2 * d / 3 + nrm * bend
    return np.stack([p0, c1, c2, p1, p1, p1, p1])


def _straight(p0, p1) -> np.ndarray:
    return np.stack([p0 + (p1 - p0) * f for f in (0.0, 1 / 3, 2 / 3, 1.0)])


class AlphabetStyle:
    """One alphabet's stroke style."""

    def __init__(self, rng: np.random.Generator):
        self.kind_p = rng.dirichlet(np.full(len(KINDS), 0.6))
        self.kind_p[KINDS.index("dot")] *= 0.4
        self.kind_p /= self.kind_p.sum()
        mean_strokes = rng.uniform(1.6, 3.6)
        p = np.exp(-0.5 * ((np.arange(1, MAX_STROKES + 1) - mean_strokes) / 0.8) ** 2)
        self.n_strokes_p = p / p.sum()
        self.curvature = rng.uniform(0.1, 0.9)
        self.length = rng.uniform(0.8, 1.4)
        self.connect = rng.uniform(0.2, 0.9)
        self.snap = rng.uniform(0.0, 1.0) ** 2  # probability of 45-degree snapped directions
        self.aspect = math.exp(rng.normal(0.0, 0.15))
        self.roundness = rng.uniform(0.6, 1.3)  # ellipse aspect of arcs and loops
        self.dot_size = rng.uniform(0.03, 0.08)

    def angle(self, rng) -> float:
        if rng.random() < self.snap:
            return rng.integers(8) * math.pi / 4 + rng.normal(0, 0.05)
        return rng.uniform(0, 2 * math.pi)


def make_stroke(style: AlphabetStyle, rng, kind: str, start: np.ndarray) -> tuple[np.ndarray, int]:
    L = style.length * rng.uniform(0.55, 1.3)
    if kind == "line":
        a = style.angle(rng)
        end = start + L * np.array([math.cos(a), math.sin(a)])
        return _line_ctrl(start, end, rng.normal(0, 0.25 * style.curvature)), 1
    if kind == "wave":
        a = style.angle(rng)
        d = L * np.array([math.cos(a), math.sin(a)])
        nrm = np.array([-d[1], d[0]]) * (0.35 + 0.5 * style.curvature) * rng.choice([-1, 1])
        c = np.stack([start, start + d / 3 + nrm, start + 2 * d / 3 - nrm, start + d])
        return np.concatenate([c, np.repeat(c[-1:], 3, 0)]), 1
    if kind == "corner":
        a = style.angle(rng)
        turn = rng.choice([-1, 1]) * rng.uniform(0.45, 0.8) * math.pi
        if rng.random() < style.snap:
            turn = rng.choice([-1, 1]) * rng.choice([0.5, 0.75]) * math.pi
        m = start + 0.7 * L * np.array([math.cos(a), math.sin(a)])
        e = m + 0.7 * L * rng.uniform(0.6, 1.2) * np.array([math.cos(a + turn), math.sin(a + turn)])
        return np.concatenate([_straight(start, m), _straight(m, e)[1:]]), 2
    if kind in ("arc", "loop"):
        r = 0.45 * L * (0.8 if kind == "loop" else 1.0)
        sweep = rng.uniform(1.7, 4.2) if kind == "arc" else rng.uniform(5.6, 6.5)
        sweep *= rng.choice([-1, 1])
        a0 = style.angle(rng)
        aspect = style.roundness * math.exp(rng.normal(0, 0.15))
        center = start - np.array([r * math.cos(a0), r * aspect * math.sin(a0)])
        return _arc_ctrl(center, r, aspect, a0, sweep), 2
    if kind == "hook":
        a = style.angle(rng)
        d = np.array([math.cos(a), math.sin(a)])
        m = start + 0.8 * L * d
        line = _straight(start, m)
        side = rng.choice([-1, 1])
        r = rng.uniform(0.15, 0.3) * style.length
        nrm = side * np.array([-d[1], d[0]])
        center = m + r * nrm
        a0 = math.atan2(m[1] - center[1], m[0] - center[0])
        sweep = side * rng.uniform(2.0, 3.4)  # turns towards the centre, tangent-continuous
        h = _arc_segment(center, r, 1.0, a0, a0 + sweep)
        return np.concatenate([line, h[1:]]), 2
    # dot: a very short straight stroke
    a = rng.uniform(0, 2 * math.pi)
    end = start + style.dot_size * np.array([math.cos(a), math.sin(a)])
    return _line_ctrl(start, end, 0.0), 1


def make_character(style: AlphabetStyle, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Control points ``[K, 7, 2]``, segment counts ``[K]`` (0 = absent) and dot flags ``[K]``."""
    n = rng.choice(np.arange(1, MAX_STROKES + 1), p=style.n_strokes_p)
    ctrl = np.zeros((MAX_STROKES, N_CTRL, 2))
    nseg = np.zeros(MAX_STROKES, dtype=np.int64)
    is_dot = np.zeros(MAX_STROKES, dtype=bool)
    pts = []
    for k in range(n):
        p = style.kind_p.copy()
        if k == 0:
            p[KINDS.index("dot")] = 0.0
            p /= p.sum()
        kind = KINDS[rng.choice(len(KINDS), p=p)]
        if kind == "dot":  # next to a stroke, like a diacritic
            prev = pts[rng.integers(k)]
            a = rng.uniform(0, 2 * math.pi)
            offset = rng.uniform(0.25, 0.45) * np.array([math.cos(a), math.sin(a)])
            start = prev[rng.integers(len(prev))] + offset
        elif k > 0 and rng.random() < style.connect:
            prev = pts[rng.integers(k)]
            start = prev[rng.choice([0, len(prev) // 2, len(prev) - 1, rng.integers(len(prev))])]
        else:
            start = rng.uniform(-0.7, 0.7, size=2)
        c, s = make_stroke(style, rng, kind, start)
        ctrl[k], nseg[k], is_dot[k] = c, s, kind == "dot"
        pts.append(_stroke_points(c, s))
    # normalise: centre the bounding box, fit the larger side into [-0.85, 0.85]
    allp = np.concatenate(pts)
    lo, hi = allp.min(0), allp.max(0)
    scale = min(1.7 / max(float((hi - lo).max()), 1e-6), 2.5)
    sx = scale * min(style.aspect, 1.0)
    sy = scale * min(1.0 / style.aspect, 1.0)
    ctrl = (ctrl - (lo + hi) / 2) * np.array([sx, sy])
    ctrl[nseg == 0] = 0.0
    return ctrl, nseg, is_dot
