"""Fashion-MNIST-C-style corruptions: seeded, reproducible distribution shifts of 28×28 images.

Each corruption takes uint8 images (N×28×28, or one 28×28 image) and a severity 1–5 and returns
uint8 images of the same shape. They use numpy and scipy only. Randomness (noise, the sign of a
rotation or shear, which images a partial flip or inversion hits) comes from
``numpy.random.default_rng(seed)``, so one seed gives the same images on every run, and the same
seed at two severities draws the same random fields: a higher severity then moves every image
further from the clean one (the bench's streams and the tests rely on this).

``flip`` and ``invert`` have no natural strength, so their severity is the share of images hit
(20 % … 100 %): a stream at severity 1 is mostly clean traffic with some flipped images.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from scipy import ndimage
from scipy.stats import poisson

from hybridserve.errors import HybridServeError

Images = npt.NDArray[np.uint8]
FloatImages = npt.NDArray[np.float64]
Corruption = Callable[[FloatImages, int, np.random.Generator], FloatImages]

SEVERITIES = (1, 2, 3, 4, 5)
#: Share of images flipped/inverted at each severity.
_SHARE = (0.2, 0.4, 0.6, 0.8, 1.0)
_ROTATE_DEG = (8.0, 16.0, 25.0, 35.0, 50.0)
_SHEAR = (0.08, 0.16, 0.25, 0.35, 0.5)
_SCALE = (0.9, 0.8, 0.7, 0.6, 0.5)  # < 1 shrinks the garment inside the frame
_SHOT_PHOTONS = (60.0, 25.0, 12.0, 6.0, 3.0)  # photons at full white: fewer = noisier
_IMPULSE = (0.03, 0.06, 0.1, 0.17, 0.27)
_BLUR_SIGMA = (0.5, 0.8, 1.1, 1.5, 2.0)
_CONTRAST = (0.7, 0.55, 0.4, 0.3, 0.2)
_BRIGHTNESS = (0.1, 0.2, 0.3, 0.4, 0.5)  # fraction of full white added


def _share(x: FloatImages, severity: int, rng: np.random.Generator) -> npt.NDArray[np.bool_]:
    # one uniform per image, compared with a rising share: the hit set grows with severity
    return np.asarray(rng.random(x.shape[0]) < _SHARE[severity - 1], dtype=np.bool_)


def _flip(x: FloatImages, severity: int, rng: np.random.Generator) -> FloatImages:
    hit = _share(x, severity, rng)
    out: FloatImages = x.copy()
    out[hit] = x[hit, :, ::-1]
    return out


def _invert(x: FloatImages, severity: int, rng: np.random.Generator) -> FloatImages:
    hit = _share(x, severity, rng)
    out: FloatImages = x.copy()
    out[hit] = 255.0 - x[hit]
    return out


def _affine(x: FloatImages, matrices: npt.NDArray[np.float64]) -> FloatImages:
    """Apply one 2×2 matrix per image about the image centre (output → input coordinates)."""
    centre = (np.asarray(x.shape[1:], dtype=np.float64) - 1.0) / 2.0
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        m = matrices[i]
        offset = centre - m @ centre
        out[i] = ndimage.affine_transform(x[i], m, offset=offset, order=1, mode="constant")
    return out


def _signs(n: int, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    return np.where(rng.random(n) < 0.5, -1.0, 1.0)


def _rotate(x: FloatImages, severity: int, rng: np.random.Generator) -> FloatImages:
    theta = np.deg2rad(_ROTATE_DEG[severity - 1]) * _signs(x.shape[0], rng)
    c, s = np.cos(theta), np.sin(theta)
    return _affine(x, np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], 1))


def _shear(x: FloatImages, severity: int, rng: np.random.Generator) -> FloatImages:
    k = _SHEAR[severity - 1] * _signs(x.shape[0], rng)
    m = np.zeros((x.shape[0], 2, 2))
    m[:, 0, 0] = m[:, 1, 1] = 1.0
    m[:, 1, 0] = k  # column shift grows with the row: a horizontal shear
    return _affine(x, m)


def _scale(x: FloatImages, severity: int, rng: np.random.Generator) -> FloatImages:
    m = np.zeros((x.shape[0], 2, 2))
    m[:, 0, 0] = m[:, 1, 1] = 1.0 / _SCALE[severity - 1]
    return _affine(x, m)


def _shot_noise(x: FloatImages, severity: int, rng: np.random.Generator) -> FloatImages:
    photons = _SHOT_PHOTONS[severity - 1]
    # Poisson counts by inverting one uniform per pixel, so the noise field is shared across
    # severities (more photons = a closer copy of the clean pixel)
    u = rng.random(x.shape)
    counts = poisson.ppf(u, x / 255.0 * photons)
    return np.asarray(counts, dtype=np.float64) / photons * 255.0


def _impulse_noise(x: FloatImages, severity: int, rng: np.random.Generator) -> FloatImages:
    u = rng.random(x.shape)
    salt = rng.random(x.shape) < 0.5
    hit = u < _IMPULSE[severity - 1]
    return np.where(hit, np.where(salt, 255.0, 0.0), x)


def _blur(x: FloatImages, severity: int, rng: np.random.Generator) -> FloatImages:
    sigma = _BLUR_SIGMA[severity - 1]
    return np.asarray(ndimage.gaussian_filter(x, sigma=(0.0, sigma, sigma), mode="constant"))


def _contrast(x: FloatImages, severity: int, rng: np.random.Generator) -> FloatImages:
    mean = x.mean(axis=(1, 2), keepdims=True)
    out: FloatImages = (x - mean) * _CONTRAST[severity - 1] + mean
    return out


def _brightness(x: FloatImages, severity: int, rng: np.random.Generator) -> FloatImages:
    return x + 255.0 * _BRIGHTNESS[severity - 1]


CORRUPTIONS: dict[str, Corruption] = {
    "flip": _flip,
    "rotate": _rotate,
    "shear": _shear,
    "scale": _scale,
    "shot_noise": _shot_noise,
    "impulse_noise": _impulse_noise,
    "blur": _blur,
    "contrast": _contrast,
    "brightness": _brightness,
    "invert": _invert,
}


def corrupt(images: npt.ArrayLike, name: str, severity: int, seed: int = 0) -> Images:
    """``images`` (uint8, N×28×28 or 28×28) under corruption ``name`` at ``severity`` (1–5)."""
    if name not in CORRUPTIONS:
        raise HybridServeError(f"corruption: unknown {name!r}; choose one of {sorted(CORRUPTIONS)}")
    if isinstance(severity, bool) or severity not in SEVERITIES:
        raise HybridServeError(f"severity: expected an integer 1–5, got {severity!r}")
    x = np.asarray(images)
    if x.dtype != np.uint8:
        raise HybridServeError(f"images: expected uint8 pixels, got {x.dtype}")
    single = x.ndim == 2
    batch = x[None] if single else x
    if batch.ndim != 3:
        raise HybridServeError(f"images: expected N×H×W or H×W, got shape {x.shape}")
    rng = np.random.default_rng(seed)
    out = CORRUPTIONS[name](batch.astype(np.float64), severity, rng)
    pixels = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return pixels[0] if single else pixels
