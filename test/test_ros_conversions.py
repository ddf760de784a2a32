"""Message conversions (core.images, core.msgconv): every encoding, padded rows, byte order, compressed
images, bad inputs; on rclpy messages (when the ROS wheels are installed) and rosbags messages."""
from __future__ import annotations

import io
import math
from types import SimpleNamespace

import numpy as np
import pytest

from geoloc_ros.core import msgconv
from geoloc_ros.core.images import (
    ENCODINGS,
    ImageDropped,
    compressed_msg_to_rgb,
    compressed_to_rgb,
    image_msg_to_rgb,
    image_to_rgb,
    msg_to_rgb,
    rgb_to_image_fields,
)
from geoloc_ros.core.msgconv import MessageDropped


def rgb_img(h=5, w=7, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def encode(img: np.ndarray, enc: str, pad: int = 0, bigendian: bool = False):
    """Build raw Image fields for ``img`` in ``enc`` (independent of the converter under test)."""
    h, w = img.shape[:2]
    ch, bpc, order = ENCODINGS[enc]
    if order == "mono":
        px = img[:, :, :1]
    else:
        px = img[:, :, ::-1] if order == "bgr" else img
        if ch == 4:
            px = np.concatenate([px, np.full((h, w, 1), 200, np.uint8)], axis=2)
    if bpc == 2:
        v = px.astype(np.uint16) * 256 + (px ^ 0x5A)  # high byte = the 8-bit value, low byte differs
        px = v.astype(">u2" if bigendian else "<u2").view(np.uint8).reshape(h, w, ch * 2)
    rows = px.reshape(h, -1)
    step = rows.shape[1] + pad
    data = np.zeros((h, step), np.uint8)
    data[:, :rows.shape[1]] = rows
    data[:, rows.shape[1]:] = 0xAB  # padding garbage that must not show up
    return dict(encoding=enc, height=h, width=w, step=step, is_bigendian=int(bigendian), data=data.tobytes())


def expected(img, enc):
    return np.repeat(img[:, :, :1], 3, axis=2) if ENCODINGS[enc][2] == "mono" else img


@pytest.mark.parametrize("enc", sorted(ENCODINGS))
@pytest.mark.parametrize("pad", [0, 5])
def test_each_encoding_round_trips_with_and_without_row_padding(enc, pad):
    img = rgb_img()
    f = encode(img, enc, pad=pad)
    out = image_to_rgb(**f)
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, expected(img, enc))


@pytest.mark.parametrize("enc", ["mono16", "rgb16", "bgra16"])
def test_16_bit_big_endian_and_little_endian_give_the_same_picture(enc):
    img = rgb_img(seed=3)
    be = image_to_rgb(**encode(img, enc, bigendian=True))
    le = image_to_rgb(**encode(img, enc, bigendian=False))
    np.testing.assert_array_equal(be, expected(img, enc))
    np.testing.assert_array_equal(le, expected(img, enc))
    # reading big-endian bytes as little-endian would give the low (noise) byte: the flag matters
    wrong = image_to_rgb(**dict(encode(img, enc, bigendian=True), is_bigendian=0))
    assert not np.array_equal(wrong, be)


def test_encoding_names_are_case_insensitive_and_data_types_vary():
    img = rgb_img()
    f = encode(img, "rgb8")
    for data in (f["data"], bytearray(f["data"]), memoryview(f["data"]), np.frombuffer(f["data"], np.uint8),
                 list(f["data"])):
        np.testing.assert_array_equal(image_to_rgb(**dict(f, encoding="RGB8", data=data)), img)
    import array

    np.testing.assert_array_equal(image_to_rgb(**dict(f, data=array.array("B", f["data"]))), img)


def test_last_row_without_padding_is_accepted():
    img = rgb_img()
    f = encode(img, "bgr8", pad=4)
    f["data"] = f["data"][:-4]
    np.testing.assert_array_equal(image_to_rgb(**f), img)


@pytest.mark.parametrize("change,reason", [
    (dict(encoding="yuv422"), "unsupported_encoding"),
    (dict(encoding="32FC1"), "unsupported_encoding"),
    (dict(encoding=""), "unsupported_encoding"),
    (dict(data=b""), "empty"),
    (dict(height=0), "empty"),
    (dict(width=0, step=0), "empty"),
    (dict(step=10), "bad_geometry"),
    (dict(height=100000, width=100000, step=300000), "too_large"),
])
def test_bad_images_raise_image_dropped_with_a_reason(change, reason):
    f = dict(encode(rgb_img(), "rgb8"), **change)
    with pytest.raises(ImageDropped) as e:
        image_to_rgb(**f)
    assert e.value.reason == reason
    assert isinstance(e.value, MessageDropped) and str(e.value)


def test_truncated_image_is_detected():
    f = encode(rgb_img(), "rgb8")
    f["data"] = f["data"][:-1]
    with pytest.raises(ImageDropped) as e:
        image_to_rgb(**f)
    assert e.value.reason == "truncated" and "needs" in str(e.value)


def _compress(img, fmt, **kw):
    from PIL import Image as PILImage

    buf = io.BytesIO()
    PILImage.fromarray(img).save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_png_is_lossless_and_jpeg_is_close_in_rgb_order():
    img = np.zeros((16, 24, 3), np.uint8)
    img[:, :8, 0] = 255  # red stripe: a BGR/RGB swap would show up
    img[:, 8:16, 2] = 255
    np.testing.assert_array_equal(compressed_to_rgb("png", _compress(img, "PNG")), img)
    out = compressed_to_rgb("rgb8; jpeg compressed bgr8", _compress(img, "JPEG", quality=95))
    assert out.shape == img.shape and np.abs(out.astype(int) - img).mean() < 6
    assert out[:, :4, 0].mean() > 200 and out[:, :4, 2].mean() < 50


def test_mono16_png_reduces_to_the_high_byte():
    from PIL import Image as PILImage

    v = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    buf = io.BytesIO()
    PILImage.fromarray(v).save(buf, format="PNG")
    out = compressed_to_rgb("mono16; png", buf.getvalue())
    np.testing.assert_array_equal(out[:, :, 0], (v >> 8).astype(np.uint8))


@pytest.mark.parametrize("data,reason", [
    (b"", "empty"),
    (b"not an image at all", "decode_failed"),
])
def test_bad_compressed_images_raise(data, reason):
    with pytest.raises(ImageDropped) as e:
        compressed_to_rgb("jpeg", data)
    assert e.value.reason == reason


def test_truncated_jpeg_is_dropped_not_half_decoded():
    data = _compress(rgb_img(64, 64), "JPEG")
    with pytest.raises(ImageDropped) as e:
        compressed_to_rgb("jpeg", data[:len(data) // 2])
    assert e.value.reason in ("truncated", "decode_failed")


def test_other_compressed_formats_are_refused():
    with pytest.raises(ImageDropped) as e:
        compressed_to_rgb("bmp", _compress(rgb_img(), "BMP"))
    assert e.value.reason == "unsupported_encoding"


def test_rgb_to_image_fields_is_the_inverse():
    img = rgb_img(9, 4)
    f = rgb_to_image_fields(img)
    assert f["step"] == 12 and f["encoding"] == "rgb8"
    np.testing.assert_array_equal(image_to_rgb(**f), img)
    with pytest.raises(ValueError):
        rgb_to_image_fields(img[:, :, 0])


# ---------------------------------------------------------------------------------------------
# real message classes: rosbags (always installed) and rclpy (ROS wheels or a ROS install)


def test_rosbags_messages_convert():
    from geoloc_ros.bag import typestore
    from geoloc_ros.sim.bag import _Msgs

    m = _Msgs(typestore())
    img = rgb_img(6, 10)
    np.testing.assert_array_equal(image_msg_to_rgb(m.image(5, img)), img)
    c = compressed_msg_to_rgb(m.compressed(5, img, 95))
    assert c.shape == img.shape
    fix = m.navsatfix(1_500_000_000, 44.5, -73.2, 10.0, 4.0, 9.0, True)
    s, why = msgconv.navsatfix_check(fix)
    assert why == "ok" and s.ok and s.t == pytest.approx(1.5) and s.lat == 44.5
    np.testing.assert_allclose(s.cov_en, np.diag([4.0, 4.0]))
    odo = m.odometry(2_000_000_000, 1.0, 2.0, 0.3, 5.0, 0.1, 0.04, 0.01, 0.0025, 1e-4)
    o = msgconv.odometry(odo)
    assert (o.t, o.x, o.y) == (2.0, 1.0, 2.0) and o.yaw == pytest.approx(0.3)
    assert o.vx == 5.0 and o.wz == 0.1
    np.testing.assert_allclose(o.cov, np.diag([0.04, 0.04, 0.01]))


def test_msg_to_rgb_reads_images_and_compressed_images_of_a_bag_alike():
    """The one converter of bags, tools and the node: an Image (any encoding; mono as three equal
    channels) or a CompressedImage, told apart by their fields."""
    from geoloc_ros.bag import header, typestore

    ts = typestore()
    T = ts.types
    img = rgb_img(6, 10)
    for enc in ("rgb8", "bgr8", "mono8"):
        f = encode(img, enc, pad=2)
        msg = T["sensor_msgs/msg/Image"](header=header(ts, 5, "cam"), height=f["height"], width=f["width"],
                                         encoding=enc, is_bigendian=0, step=f["step"],
                                         data=np.frombuffer(f["data"], np.uint8))
        out = msg_to_rgb(msg)
        assert out.shape == (6, 10, 3) and out.dtype == np.uint8
        if enc == "mono8":
            np.testing.assert_array_equal(out, np.repeat(img[:, :, :1], 3, axis=2))
        else:
            np.testing.assert_array_equal(out, img)
    png = T["sensor_msgs/msg/CompressedImage"](header=header(ts, 5, "cam"), format="png",
                                               data=np.frombuffer(_compress(img, "PNG"), np.uint8))
    np.testing.assert_array_equal(msg_to_rgb(png), img)
    with pytest.raises(ImageDropped, match="is not supported") as e:
        msg_to_rgb(SimpleNamespace(encoding="yuv422", height=2, width=2, step=4, is_bigendian=0, data=bytes(8)))
    assert e.value.reason == "unsupported_encoding"


def _rclpy_msgs():
    return pytest.importorskip("sensor_msgs.msg", reason="ROS 2 Python messages not installed (pip install .[ros])")


def test_rclpy_image_and_compressed_messages_convert():
    sm = _rclpy_msgs()
    img = rgb_img(6, 10)
    f = encode(img, "bgra8", pad=3)
    msg = sm.Image(encoding=f["encoding"], height=f["height"], width=f["width"], step=f["step"],
                   is_bigendian=0, data=f["data"])
    np.testing.assert_array_equal(image_msg_to_rgb(msg), img)
    np.testing.assert_array_equal(msg_to_rgb(msg), img)
    cm = sm.CompressedImage(format="png", data=_compress(img, "PNG"))
    np.testing.assert_array_equal(compressed_msg_to_rgb(cm), img)
    np.testing.assert_array_equal(msg_to_rgb(cm), img)


def test_navsatfix_cases_on_rclpy_messages():
    sm = _rclpy_msgs()

    def fix(lat=44.0, lon=-73.0, status=0, cov=(4, 0.5, 0, 0.5, 9, 0, 0, 0, 16), ctype=3):
        m = sm.NavSatFix(latitude=lat, longitude=lon, position_covariance_type=ctype)
        m.position_covariance = [float(c) for c in cov]
        m.status.status = status
        m.header.stamp.sec, m.header.stamp.nanosec = 10, 250_000_000
        return m

    s, why = msgconv.navsatfix_check(fix())
    assert why == "ok" and s.t == 10.25
    np.testing.assert_allclose(s.cov_en, [[4, 0.5], [0.5, 9]])
    assert msgconv.navsatfix_check(fix(ctype=2))[0].cov_en[0, 1] == 0  # diagonal: off-diagonals ignored
    assert msgconv.navsatfix_check(fix(ctype=0))[0].cov_en is None and msgconv.navsatfix(fix(ctype=0)).ok
    assert msgconv.navsatfix(fix(cov=(float("nan"),) * 9)).cov_en is None  # bad covariance: unknown, still ok
    assert msgconv.navsatfix(fix(cov=(-1, 0, 0, 0, 1, 0, 0, 0, 1))).cov_en is None
    # a covariance claimed (type not UNKNOWN) but not one is a substitution the node counts
    zeros = (0.0,) * 9
    for bad in (fix(cov=(float("nan"),) * 9), fix(cov=(-1, 0, 0, 0, 1, 0, 0, 0, 1)), fix(cov=zeros),
                fix(cov=zeros, ctype=1), fix(cov=zeros, ctype=2)):
        assert msgconv.navsatfix_cov_invalid(bad)
    assert not msgconv.navsatfix_cov_invalid(fix()) and not msgconv.navsatfix_cov_invalid(fix(cov=zeros, ctype=0))
    for kw, reason in ((dict(status=-1), "no_fix"), (dict(lat=float("nan")), "nan_position"),
                       (dict(lon=float("inf")), "nan_position"), (dict(lat=91.0), "out_of_range")):
        s, why = msgconv.navsatfix_check(fix(**kw))
        assert not s.ok and why == reason and s.cov_en is None


def test_odometry_yaw_covariance_and_bad_values():
    _rclpy_msgs()
    from nav_msgs.msg import Odometry

    m = Odometry()
    m.header.stamp.sec = 3
    m.pose.pose.position.x, m.pose.pose.position.y = 4.0, -2.0
    q = msgconv.yaw_to_quat(-2.5)
    o = m.pose.pose.orientation
    o.x, o.y, o.z, o.w = q
    m.twist.twist.linear.x, m.twist.twist.angular.z = 3.0, -0.2
    s = msgconv.odometry(m)
    assert s.yaw == pytest.approx(-2.5) and s.cov is None  # all-zero covariance = unknown
    cov = np.zeros((6, 6))
    cov[0, 0], cov[1, 1], cov[5, 5], cov[0, 5] = 1.0, 2.0, 0.1, 0.05
    cov[5, 0] = 0.05
    m.pose.covariance = cov.reshape(-1).tolist()
    np.testing.assert_allclose(msgconv.odometry(m).cov, [[1, 0, 0.05], [0, 2, 0], [0.05, 0, 0.1]])
    m.pose.pose.position.x = math.nan
    with pytest.raises(MessageDropped) as e:
        msgconv.odometry(m)
    assert e.value.reason == "nonfinite_odom"
    m.pose.pose.position.x = 0.0
    o.x, o.y, o.z, o.w = 0.0, 0.0, 0.0, 0.0
    with pytest.raises(MessageDropped) as e:
        msgconv.odometry(m)
    assert e.value.reason == "bad_quaternion"


def test_stamp_and_covariance_helpers():
    assert msgconv.stamp_to_sec(SimpleNamespace(sec=1, nanosec=500_000_000)) == 1.5
    assert msgconv.sec_to_stamp_parts(1.9999999999) == (2, 0)
    assert msgconv.sec_to_stamp_parts(1700000000.25) == (1700000000, 250_000_000)
    c6 = msgconv.pose_cov6(np.diag([1.0, 2.0, 3.0])).reshape(6, 6)
    assert c6[0, 0] == 1 and c6[1, 1] == 2 and c6[5, 5] == 3 and c6[2, 2] == 1e6


def test_the_stamp_of_a_serialized_image_is_read_from_its_cdr_bytes():
    """The node takes raw Images off DDS serialized and counts them by the stamp in the bytes: the same
    stamp as the deserialised message, little- or big-endian; garbage gives NaN, never an exception."""
    import math
    import struct

    from geoloc_ros.bag import typestore

    ts = typestore()
    Image, Header, Time = (ts.types[n] for n in ("sensor_msgs/msg/Image", "std_msgs/msg/Header",
                                                   "builtin_interfaces/msg/Time"))
    msg = Image(header=Header(stamp=Time(sec=1_700_000_123, nanosec=456_000_000), frame_id="cam"), height=2,
                width=2, encoding="rgb8", is_bigendian=0, step=6, data=np.zeros(12, np.uint8))
    data = ts.serialize_cdr(msg, "sensor_msgs/msg/Image")
    assert msgconv.cdr_header_time(data) == pytest.approx(1_700_000_123.456, abs=1e-6)
    assert msgconv.cdr_header_time(b"\x00\x00\x00\x00" + struct.pack(">iI", 7, 500_000_000)) == pytest.approx(7.5)
    for bad in (b"", b"\x00\x01\x00", b"\x07\x07\x00\x00" + bytes(8)):
        assert math.isnan(msgconv.cdr_header_time(bad))
    sm = _rclpy_msgs()
    from rclpy.serialization import serialize_message

    m = sm.Image()
    m.header.stamp.sec, m.header.stamp.nanosec = 42, 1
    assert msgconv.cdr_header_time(serialize_message(m)) == pytest.approx(42.000000001)
