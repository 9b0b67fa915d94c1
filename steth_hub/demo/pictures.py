"""The demo's pictures: the three-window spectrogram (:func:`steth_hub.display.spectrogram_image`,
numpy: no torch) and PNGs as arrays."""

from __future__ import annotations

from typing import TYPE_CHECKING

from steth_hub.display import SPECTROGRAM_BAND_HZ, SPECTROGRAM_WINDOWS_MS, spectrogram_image  # noqa: F401

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np


def png_to_array(png: bytes) -> "np.ndarray":
    """PNG bytes as an RGB uint8 array (what ``gr.Image(type="numpy")`` shows)."""
    import io

    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGB")).copy()
