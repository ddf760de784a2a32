"""Heading-up aerial tiles and bilinear sampling."""
import numpy as np
import pytest

from geoloc_ros.core.tiles import sample_bilinear, tile_grid


def test_tile_grid_points_heading_up():
    X, Y = tile_grid(10.0, 20.0, yaw=0.0, tile_m=8.0, tile_px=4)  # heading east
    # top row is ahead (east, larger x); left column is left of travel (north, larger y)
    assert X[0].mean() > X[-1].mean() and np.allclose(X[0], 13.0)
    assert Y[:, 0].mean() > Y[:, -1].mean() and np.allclose(Y[:, 0], 23.0)
    assert X.mean() == pytest.approx(10.0) and Y.mean() == pytest.approx(20.0)
    Xn, Yn = tile_grid(0.0, 0.0, yaw=np.pi / 2, tile_m=8.0, tile_px=4)  # heading north = map-aligned
    np.testing.assert_allclose(Yn[0], 3.0, atol=1e-9)
    np.testing.assert_allclose(Xn[:, 0], -3.0, atol=1e-9)


def test_sample_bilinear_exact_at_pixel_centres_and_interpolates():
    img = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert sample_bilinear(img, np.array([1.5]), np.array([2.5]))[0] == img[1, 2]
    assert sample_bilinear(img, np.array([1.5]), np.array([3.0]))[0] == pytest.approx((img[1, 2] + img[1, 3]) / 2)
    assert sample_bilinear(img, np.array([10.0]), np.array([1.0]), fill=-1)[0] == -1
    rgb = np.stack([img, img * 2, img * 3], -1)
    out = sample_bilinear(rgb, np.array([[0.5]]), np.array([[0.5]]))
    assert out.shape == (1, 1, 3) and out[0, 0, 2] == 0
