"""sensor_msgs Image / CompressedImage -> uint8 RGB [H, W, 3] numpy arrays, resized for the model.

cv_bridge is not used: builds compiled against numpy 1.x fail under numpy 2 (vision_opencv #535),
and it is absent from many pip installs; the conversion below is a few lines of numpy.
The functions take plain fields so they can be tested (and reused) without ROS messages.
"""

from __future__ import annotations

import cv2
import numpy as np

# encoding -> (numpy dtype of one channel, channels)
_RAW_ENCODINGS: dict[str, tuple[str, int]] = {
    "rgb8": ("u1", 3),
    "bgr8": ("u1", 3),
    "rgba8": ("u1", 4),
    "bgra8": ("u1", 4),
    "mono8": ("u1", 1),
    "8uc1": ("u1", 1),
    "mono16": ("u2", 1),
    "16uc1": ("u2", 1),
    "32fc1": ("f4", 1),
}
SUPPORTED_RAW_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "16UC1", "32FC1")
SUPPORTED_COMPRESSED_FORMATS = ("jpeg", "png")


class ImageConversionError(ValueError):
    """An image that cannot be turned into an RGB frame; the message says what was wrong."""


def raw_layout_problem(encoding: str, height: int, width: int, step: int, size: int) -> str:
    """Why a sensor_msgs/Image with these fields and ``size`` data bytes cannot be read; "" if it can."""
    key = encoding.lower()
    if key not in _RAW_ENCODINGS:
        return f"unknown encoding {encoding!r} (supported: {', '.join(SUPPORTED_RAW_ENCODINGS)})"
    if height <= 0 or width <= 0:
        return f"empty image: height={height}, width={width}"
    kind, channels = _RAW_ENCODINGS[key]
    pixel_bytes = channels * np.dtype(kind).itemsize
    if step < width * pixel_bytes:
        return (f"step {step} is smaller than width {width} x {pixel_bytes} bytes per pixel "
                f"= {width * pixel_bytes} for {encoding}")
    if size < step * height:
        return f"data has {size} bytes, expected step {step} x height {height} = {step * height}"
    return ""


def compressed_format_problem(format_: str, size: int) -> str:
    """Why a sensor_msgs/CompressedImage of this format and size cannot be decoded; "" if it may be."""
    fmt = format_.lower()
    if "compresseddepth" in fmt or not any(name in fmt for name in SUPPORTED_COMPRESSED_FORMATS):
        supported = ", ".join(SUPPORTED_COMPRESSED_FORMATS)
        return f"unsupported compressed format {format_!r} (supported: {supported})"
    if size == 0:
        return f"empty {format_} payload"
    return ""


def frame_problem(msg, max_bytes: int) -> str:
    """The checks a frame passes where it enters (before any synchronizer): layout, format, size.
    Decoding errors of compressed frames can only show when they are decoded, after matching."""
    size = len(msg.data)
    if size > max_bytes:
        return f"frame is {size} bytes, over max_image_bytes={max_bytes}"
    if hasattr(msg, "encoding"):
        return raw_layout_problem(msg.encoding, msg.height, msg.width, msg.step, size)
    return compressed_format_problem(msg.format, size)


def raw_to_rgb(
    encoding: str,
    height: int,
    width: int,
    step: int,
    data: bytes | memoryview | np.ndarray,
    is_bigendian: bool = False,
) -> np.ndarray:
    """Convert the fields of a sensor_msgs/Image to a uint8 RGB array [height, width, 3].

    Rows may be padded (``step`` > width * bytes per pixel); the padding is dropped.
    16-bit images map their full range onto 0..255; 32FC1 maps 0.0..1.0 onto 0..255 (NaN -> 0).
    """
    key = encoding.lower()
    buffer = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.view(np.uint8)
    problem = raw_layout_problem(encoding, height, width, step, buffer.size)
    if problem:
        raise ImageConversionError(problem)
    kind, channels = _RAW_ENCODINGS[key]
    dtype = np.dtype(kind).newbyteorder(">" if is_bigendian else "<")
    row_bytes = width * channels * dtype.itemsize
    rows = buffer[: step * height].reshape(height, step)[:, :row_bytes]
    pixels = np.ascontiguousarray(rows).view(dtype).reshape(height, width, channels)
    if key in ("rgb8", "rgba8"):
        return np.ascontiguousarray(pixels[:, :, :3])
    if key in ("bgr8", "bgra8"):
        return np.ascontiguousarray(pixels[:, :, 2::-1])
    if kind == "u2":
        pixels = (pixels >> 8).astype(np.uint8)
    elif kind == "f4":
        pixels = np.clip(np.nan_to_num(pixels.astype(np.float32), nan=0.0), 0.0, 1.0) * 255.0 + 0.5
        pixels = pixels.astype(np.uint8)
    return np.repeat(pixels, 3, axis=2)


def compressed_to_rgb(format_: str, data: bytes | memoryview | np.ndarray) -> np.ndarray:
    """Decode a sensor_msgs/CompressedImage (jpeg or png) to uint8 RGB [H, W, 3]."""
    buffer = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.view(np.uint8)
    problem = compressed_format_problem(format_, buffer.size)
    if problem:
        raise ImageConversionError(problem)
    bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageConversionError(f"could not decode {buffer.size} bytes as {format_}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def resize_rgb(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to (height, width); INTER_AREA keeps downscaled frames free of aliasing.

    Halves first (exact 2x2 means) while the frame is even-sized and at least twice the target:
    OpenCV's INTER_AREA takes a slow generic path for non-integer ratios (0.85 ms for 640x480 ->
    64x64 here) and a vectorised one for 2x, so 640x480 -> 160x120 -> 64x64 costs 0.17 ms. Box
    filters compose, so the result is INTER_AREA's to within rounding, as each halving rounds to
    uint8 (46 dB PSNR on a test frame)."""
    height, width = size
    while (image.shape[0] >= 2 * height and image.shape[1] >= 2 * width
           and image.shape[0] % 2 == 0 and image.shape[1] % 2 == 0):
        image = cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA)
    if image.shape[:2] == (height, width):
        return image
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def image_msg_to_rgb(msg, size: tuple[int, int] | None = None) -> np.ndarray:
    """sensor_msgs/Image or sensor_msgs/CompressedImage -> RGB, optionally resized."""
    if hasattr(msg, "encoding"):
        rgb = raw_to_rgb(msg.encoding, msg.height, msg.width, msg.step, _as_bytes(msg.data), msg.is_bigendian)
    else:
        rgb = compressed_to_rgb(msg.format, _as_bytes(msg.data))
    return resize_rgb(rgb, size) if size is not None else rgb


def _as_bytes(data) -> np.ndarray:
    # rclpy gives array.array('B') (or bytes / list for hand-built messages); all are buffers but a list.
    if isinstance(data, list):
        return np.asarray(data, dtype=np.uint8)
    return np.frombuffer(data, dtype=np.uint8)
