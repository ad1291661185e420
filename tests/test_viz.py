"""Sample grids of images with any number of channels: grey, colour, and their PNG modes."""

import io

import numpy as np
import pytest
from PIL import Image

from digitgan.viz import make_grid, png_bytes


@pytest.mark.parametrize(
    "channels, shape, mode",
    [(1, (8, 16), "L"), (2, (8, 16, 3), "RGB"), (3, (8, 16, 3), "RGB")] + [(4, (8, 16, 4), "RGBA")],
)
def test_grids_of_every_channel_count(channels: int, shape: tuple, mode: str) -> None:
    images = np.random.default_rng(0).integers(1, 256, (2, channels, 4, 5), dtype=np.uint8)
    grid = make_grid(images, nrow=2)
    assert grid.shape == shape
    first = grid[2:6, 2:7]  # the first cell, after the 2-pixel border
    if channels == 1:
        assert np.array_equal(first, images[0, 0])
    else:
        assert np.array_equal(first[..., :channels], images[0].transpose(1, 2, 0))
        if channels == 2:  # red and green; no blue
            assert not first[..., 2].any()
    assert Image.open(io.BytesIO(png_bytes(grid))).mode == mode
