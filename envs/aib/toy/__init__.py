"""The numpy environments of AIB (DI family, ODE) and their small rgb_array renderer."""

from __future__ import annotations

import numpy as np

RENDER_SIZE = 128


def draw_disc(image: np.ndarray, center: tuple[float, float], radius: float, color: tuple[int, int, int]) -> None:
    """Fill a disc given in pixel coordinates (x to the right, y down) in place."""
    yy, xx = np.mgrid[0 : image.shape[0], 0 : image.shape[1]]
    image[(xx - center[0]) ** 2 + (yy - center[1]) ** 2 <= radius**2] = color


def to_pixel(value: float, low: float, high: float) -> float:
    return (float(np.clip(value, low, high)) - low) / (high - low) * (RENDER_SIZE - 1)
