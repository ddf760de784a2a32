"""sensor_msgs/Image and CompressedImage -> RGB uint8 [H, W, 3], without cv_bridge (numpy + Pillow).

Works on the raw fields, so rclpy, rosbags and mcap_ros2 messages all convert the same way:

    msg_to_rgb(msg)              # Image or CompressedImage: the one entry for bags, tools and tests
    image_to_rgb(encoding, height, width, step, is_bigendian, data) -> np.ndarray uint8 [H, W, 3]
    image_msg_to_rgb(msg)        # sensor_msgs/Image (duck-typed)
    compressed_to_rgb(fmt, data) # CompressedImage format + data (JPEG / PNG via Pillow)
    compressed_msg_to_rgb(msg)
    rgb_to_image_fields(img)     # the inverse, for publishing (encoding rgb8, step = 3 * width)

Supported encodings: rgb8, bgr8, mono8, rgba8, bgra8 and the 16-bit mono16, rgb16, bgr16,
rgba16, bgra16 (big- or little-endian per ``is_bigendian``; reduced to 8 bits by keeping the high
byte); mono images come out as three equal channels (always [H, W, 3]). Rows are read with
``step`` bytes each, so padded rows work. Anything else raises
``ImageDropped`` with a ``reason`` key the caller counts: "unsupported_encoding", "empty",
"bad_geometry", "truncated", "too_large", "decode_failed".
"""
from __future__ import annotations

import io
from typing import Any, Dict

import numpy as np

from .msgconv import MessageDropped

# encoding -> (channels, bytes per channel, channel order of the first 3 channels: "rgb" | "bgr" | "mono")
ENCODINGS: Dict[str, tuple] = {
    "rgb8": (3, 1, "rgb"), "bgr8": (3, 1, "bgr"), "mono8": (1, 1, "mono"), "rgba8": (4, 1, "rgb"),
    "bgra8": (4, 1, "bgr"),
    "mono16": (1, 2, "mono"), "rgb16": (3, 2, "rgb"), "bgr16": (3, 2, "bgr"), "rgba16": (4, 2, "rgb"),
    "bgra16": (4, 2, "bgr"),
}
MAX_PIXELS = 64 * 1024 * 1024  # refuse absurd headers before allocating (64 Mpx)
MAX_COMPRESSED_BYTES = 64 * 1024 * 1024


class ImageDropped(MessageDropped):
    """An image that cannot be converted; ``reason`` is a counter key."""


def _as_bytes_array(data: Any) -> np.ndarray:
    """Message ``data`` (bytes, bytearray, array.array('B'), memoryview, numpy array, list) -> uint8 1-D view."""
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8) if data.dtype.itemsize == 1 else data.astype(np.uint8).reshape(-1)
    if isinstance(data, (bytes, bytearray, memoryview)):
        return np.frombuffer(data, np.uint8)
    try:
        return np.frombuffer(memoryview(data), np.uint8)  # array.array('B') and other buffers
    except TypeError:
        return np.asarray(data, dtype=np.uint8).reshape(-1)


def image_to_rgb(encoding: str, height: int, width: int, step: int, is_bigendian: int, data: Any) -> np.ndarray:
    """Raw Image fields -> contiguous RGB uint8 [height, width, 3] (a copy; never a view of ``data``)."""
    enc = str(encoding).strip().lower()
    spec = ENCODINGS.get(enc)
    if spec is None:
        raise ImageDropped("unsupported_encoding",
                           f"image encoding {encoding!r} is not supported; publish one of {', '.join(ENCODINGS)}")
    ch, bpc, order = spec
    height, width, step = int(height), int(width), int(step)
    if height <= 0 or width <= 0:
        raise ImageDropped("empty", f"image is {width}x{height}: no pixels")
    if height * width > MAX_PIXELS:
        raise ImageDropped("too_large", f"image {width}x{height} is over {MAX_PIXELS} pixels")
    row_bytes = width * ch * bpc
    if step < row_bytes:
        raise ImageDropped("bad_geometry", f"{enc} image step {step} is smaller than width * {ch * bpc} = {row_bytes}")
    buf = _as_bytes_array(data)
    if buf.size == 0:
        raise ImageDropped("empty", f"{enc} image {width}x{height} has no data")
    need = step * (height - 1) + row_bytes  # the last row's padding may be missing
    if buf.size < need:
        raise ImageDropped("truncated", f"{enc} image {width}x{height} (step {step}) needs {need} bytes, got {buf.size}")
    if buf.size >= step * height:
        rows = buf[:step * height].reshape(height, step)[:, :row_bytes]
    else:
        rows = np.stack([buf[r * step:r * step + row_bytes] for r in range(height)])
    if bpc == 2:
        dt = np.dtype(">u2" if int(is_bigendian) else "<u2")
        px = np.ascontiguousarray(rows).view(dt).reshape(height, width, ch)
        px = (px >> 8).astype(np.uint8)
    else:
        px = rows.reshape(height, width, ch)
    if order == "mono":
        return np.repeat(px[:, :, :1], 3, axis=2)
    rgb = px[:, :, 2::-1] if order == "bgr" else px[:, :, :3]
    return np.ascontiguousarray(rgb, dtype=np.uint8)


def image_msg_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/Image (any message object with the standard fields) -> RGB uint8 [H, W, 3]."""
    return image_to_rgb(msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian, msg.data)


def compressed_to_rgb(fmt: str, data: Any) -> np.ndarray:
    """CompressedImage format + data (JPEG or PNG; anything Pillow decodes) -> RGB uint8 [H, W, 3].

    ``fmt`` is informational (image_transport writes e.g. "rgb8; jpeg compressed bgr8"): the
    decoder reads the file signature, and colour comes out as RGB whatever the format string says.
    """
    buf = _as_bytes_array(data)
    if buf.size == 0:
        raise ImageDropped("empty", f"compressed image ({fmt!r}) has no data")
    if buf.size > MAX_COMPRESSED_BYTES:
        raise ImageDropped("too_large", f"compressed image of {buf.size} bytes is over {MAX_COMPRESSED_BYTES}")
    from PIL import Image as PILImage

    try:
        with PILImage.open(io.BytesIO(buf.tobytes())) as im:
            if im.width * im.height > MAX_PIXELS:
                raise ImageDropped("too_large", f"compressed image {im.width}x{im.height} is over {MAX_PIXELS} px")
            if im.format not in ("JPEG", "PNG"):
                raise ImageDropped("unsupported_encoding",
                                   f"compressed image format {im.format} ({fmt!r}) is not supported; use jpeg or png")
            im.load()  # decode now: truncated data fails here
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = (np.asarray(im, dtype=np.uint32) >> 8).clip(0, 255).astype(np.uint8)
                return np.ascontiguousarray(np.repeat(arr[:, :, None], 3, axis=2))
            return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))
    except ImageDropped:
        raise
    except (OSError, ValueError, SyntaxError) as exc:  # PIL: UnidentifiedImageError is an OSError
        reason = "truncated" if "truncated" in str(exc).lower() else "decode_failed"
        raise ImageDropped(reason, f"compressed image ({fmt!r}, {buf.size} bytes) does not decode: {exc}") from None


def compressed_msg_to_rgb(msg) -> np.ndarray:
    return compressed_to_rgb(msg.format, msg.data)


def msg_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/Image or CompressedImage (rclpy, rosbags or mcap_ros2 message) -> RGB uint8
    [H, W, 3]: a message with ``encoding`` is an Image, otherwise a CompressedImage (``format``)."""
    return image_msg_to_rgb(msg) if hasattr(msg, "encoding") else compressed_msg_to_rgb(msg)


def rgb_to_image_fields(img: np.ndarray) -> Dict[str, Any]:
    """RGB uint8 [H, W, 3] -> Image fields (encoding rgb8, step 3 * W, bytes data)."""
    img = np.ascontiguousarray(img, dtype=np.uint8)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an RGB image [H, W, 3], got shape {img.shape}")
    h, w = img.shape[:2]
    return {"encoding": "rgb8", "height": h, "width": w, "step": 3 * w, "is_bigendian": 0, "data": img.tobytes()}
