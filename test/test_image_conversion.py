"""Image conversion without cv_bridge: every encoding, padded rows, byte order, resize, bad input."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vla_ros.ros.image_conversion import (
    ImageConversionError,
    compressed_to_rgb,
    image_msg_to_rgb,
    raw_to_rgb,
    resize_rgb,
)


def _rgb(h: int = 6, w: int = 5, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _padded(pixels: np.ndarray, pad: int) -> tuple[bytes, int]:
    """Row bytes of ``pixels`` followed by ``pad`` junk bytes each: (data, step)."""
    rows = pixels.reshape(pixels.shape[0], -1).view(np.uint8)
    junk = np.full((rows.shape[0], pad), 0xAB, np.uint8)
    return np.hstack([rows, junk]).tobytes(), rows.shape[1] + pad


@pytest.mark.parametrize("pad", [0, 3, 16])
def test_colour_encodings_come_out_rgb(pad):
    rgb = _rgb()
    h, w = rgb.shape[:2]
    cases = {
        "rgb8": rgb,
        "bgr8": rgb[:, :, ::-1],
        "rgba8": np.dstack([rgb, np.full((h, w), 7, np.uint8)]),
        "bgra8": np.dstack([rgb[:, :, ::-1], np.full((h, w), 7, np.uint8)]),
    }
    for encoding, pixels in cases.items():
        data, step = _padded(np.ascontiguousarray(pixels), pad)
        out = raw_to_rgb(encoding, h, w, step, data)
        assert out.dtype == np.uint8 and out.shape == (h, w, 3), encoding
        np.testing.assert_array_equal(out, rgb, err_msg=encoding)


@pytest.mark.parametrize("bigendian", [False, True])
def test_mono_and_depth_encodings(bigendian):
    h, w = 4, 3
    mono = np.arange(h * w, dtype=np.uint8).reshape(h, w) * 20
    out = raw_to_rgb("mono8", h, w, w, mono.tobytes())
    assert (out == mono[:, :, None]).all()

    # 16-bit: the full range onto 0..255 (the high byte); values and results written out by hand
    wide = np.array([[0, 255, 256], [32768, 40000, 65280], [65535, 1, 511], [5, 6, 7]], np.uint16)
    wide_expected = np.array([[0, 0, 1], [128, 156, 255], [255, 0, 1], [0, 0, 0]], np.uint8)
    data = wide.astype(">u2" if bigendian else "<u2").tobytes()
    for encoding in ("mono16", "16UC1"):
        out = raw_to_rgb(encoding, h, w, 2 * w, data, is_bigendian=bigendian)
        np.testing.assert_array_equal(out[:, :, 0], wide_expected)
        assert (out[:, :, 0] == out[:, :, 2]).all()

    # 32FC1: 0.0..1.0 onto 0..255 rounded, clipped outside, NaN -> 0
    depth = np.array([[np.nan, -0.5, 0.0], [0.25, 0.5, 0.999], [1.0, 1.5, np.inf], [-np.inf, 0.1, 0.9]],
                     np.float32)
    depth_expected = np.array([[0, 0, 0], [64, 128, 255], [255, 255, 255], [0, 26, 230]], np.uint8)
    out = raw_to_rgb("32FC1", h, w, 4 * w + 4, _padded(depth, 4)[0])
    np.testing.assert_array_equal(out[:, :, 1], depth_expected)


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 12), w=st.integers(1, 12), pad=st.integers(0, 9), seed=st.integers(0, 1000))
def test_any_padding_round_trips(h, w, pad, seed):
    rgb = _rgb(h, w, seed)
    data, step = _padded(rgb[:, :, ::-1].copy(), pad)
    np.testing.assert_array_equal(raw_to_rgb("bgr8", h, w, step, data), rgb)


@pytest.mark.parametrize(
    "encoding, h, w, step, size, match",
    [
        ("yuv422", 2, 2, 4, 8, "unknown encoding 'yuv422'"),
        ("rgb8", 2, 4, 11, 24, "step 11 is smaller than width 4"),
        ("rgb8", 3, 2, 6, 17, "data has 17 bytes, expected step 6 x height 3 = 18"),
        ("mono16", 2, 2, 3, 6, "step 3 is smaller"),
        ("rgb8", 0, 2, 6, 0, "empty image"),
    ],
)
def test_malformed_raw_images_raise_naming_the_problem(encoding, h, w, step, size, match):
    with pytest.raises(ImageConversionError, match=match):
        raw_to_rgb(encoding, h, w, step, bytes(size))


def test_jpeg_and_png_decode_to_rgb():
    rgb = np.zeros((16, 24, 3), np.uint8)
    rgb[:, :12] = (250, 10, 10)  # red left half, blue right half: catches a BGR/RGB swap
    rgb[:, 12:] = (10, 10, 250)
    ok, png = cv2.imencode(".png", rgb[:, :, ::-1])
    assert ok
    np.testing.assert_array_equal(compressed_to_rgb("png", png.tobytes()), rgb)
    ok, jpeg = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    out = compressed_to_rgb("rgb8; jpeg compressed bgr8", jpeg.tobytes())
    assert out.shape == rgb.shape
    away_from_edge = np.r_[0:8, 16:24]  # JPEG chroma subsampling blurs the colour edge itself
    assert np.abs(out[:, away_from_edge].astype(int) - rgb[:, away_from_edge].astype(int)).max() < 20


@pytest.mark.parametrize(
    "fmt, data, match",
    [
        ("jpeg", b"", "empty jpeg payload"),
        ("jpeg", b"not a jpeg at all", "could not decode 17 bytes as jpeg"),
        ("tiff", b"\x00" * 10, "unsupported compressed format 'tiff'"),
        ("16UC1; compressedDepth png", b"\x00" * 10, "unsupported compressed format"),
    ],
)
def test_bad_compressed_images_raise(fmt, data, match):
    with pytest.raises(ImageConversionError, match=match):
        compressed_to_rgb(fmt, data)


def test_resize_to_model_size_uses_area_interpolation():
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[::2, ::2] = 255  # a checkerboard of single pixels: INTER_AREA averages it to a flat 25% grey
    out = resize_rgb(rgb, (4, 2))
    assert out.shape == (4, 2, 3)
    assert np.all(np.abs(out.astype(int) - 64) <= 1)
    assert resize_rgb(rgb, (8, 8)) is rgb


def test_resize_halves_first_and_stays_within_rounding_of_one_area_resize():
    """640x480 -> 64x64 goes through 2x halvings (the fast path); the box filters compose, so the
    frame equals one INTER_AREA resize to within rounding (each halving rounds to uint8)."""
    y, x = np.mgrid[0:480, 0:640]
    rgb = np.stack([(np.sin(x / 17.0) + np.cos(y / 23.0)) * 60 + 128, x * 255.0 / 640, y * 255.0 / 480], -1)
    rgb = rgb.astype(np.uint8)
    one_shot = cv2.resize(rgb, (64, 64), interpolation=cv2.INTER_AREA).astype(int)
    out = resize_rgb(rgb, (64, 64))
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - one_shot).max() <= 2
    eighth = cv2.resize(rgb, (80, 60), interpolation=cv2.INTER_AREA).astype(int)
    assert np.abs(resize_rgb(rgb, (60, 80)).astype(int) - eighth).max() <= 2
    half = cv2.resize(rgb, (320, 240), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(resize_rgb(rgb, (240, 320)), half)  # one halving: INTER_AREA itself


def test_ros_messages_convert_and_resize():
    rclpy = pytest.importorskip("rclpy", reason="needs the ROS 2 runtime on PYTHONPATH")  # noqa: F841
    from sensor_msgs.msg import CompressedImage, Image

    rgb = _rgb(40, 60)
    msg = Image(height=40, width=60, encoding="bgr8", step=60 * 3, data=rgb[:, :, ::-1].tobytes())
    out = image_msg_to_rgb(msg, (20, 30))
    assert out.shape == (20, 30, 3)
    np.testing.assert_array_equal(out, cv2.resize(rgb, (30, 20), interpolation=cv2.INTER_AREA))
    ok, png = cv2.imencode(".png", rgb[:, :, ::-1])
    compressed = CompressedImage(format="png", data=png.tobytes())
    np.testing.assert_array_equal(image_msg_to_rgb(compressed), rgb)
