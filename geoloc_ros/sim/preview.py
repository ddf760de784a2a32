"""Pictures for people: an orthophoto crop with a drive's path and the camera frames seen along it."""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..core.camera import PinholeCamera
from .world import World

_COLOURS = [(255, 64, 64), (255, 200, 0), (0, 200, 255), (255, 0, 255), (0, 255, 120), (255, 140, 0)]


def ortho_crop(world: World, cx: float, cy: float, half_m: float) -> Tuple[np.ndarray, Tuple[float, float]]:
    """North-up crop of the orthophoto around (cx, cy); returns (rgb, (x0, y1)) with the local coordinates
    of the crop's top-left corner. Parts outside the world are grey."""
    g = world.meta.gsd_m
    n = int(round(2 * half_m / g))
    r0, c0 = (int(math.floor(v)) for v in world.xy_to_rc(cx - half_m, cy + half_m))
    out = np.full((n, n, 3), 90, np.uint8)
    H, W = world.ortho.shape[:2]
    rs, cs = max(r0, 0), max(c0, 0)
    re, ce = min(r0 + n, H), min(c0 + n, W)
    if re > rs and ce > cs:
        out[rs - r0:re - r0, cs - c0:ce - c0] = world.ortho[rs:re, cs:ce]
    x0, y1 = world.rc_to_xy(r0, c0)
    return out, (float(x0), float(y1))


def compose_preview(world: World, path_xy: np.ndarray, poses: Sequence[Tuple[float, float, float]],
                    frames: Sequence[np.ndarray], camera: PinholeCamera, *, map_px: int = 384,
                    title: str = "") -> "PIL.Image.Image":  # noqa: F821
    """Map on the left (orthophoto, path in white, numbered camera poses with their field of view),
    the camera frames on the right, each labelled with its number and the same colour."""
    from PIL import Image, ImageDraw

    pose_xy = np.array([(p[0], p[1]) for p in poses])
    lo, hi = pose_xy.min(axis=0), pose_xy.max(axis=0)
    centre = (lo + hi) / 2
    half = max(float((hi - lo).max()) / 2 + 35.0, 50.0)
    crop, (x0, y1) = ortho_crop(world, centre[0], centre[1], half)
    g = world.meta.gsd_m
    scale = map_px / crop.shape[0]
    m = Image.fromarray(crop).resize((map_px, map_px), Image.BILINEAR)
    d = ImageDraw.Draw(m)

    def px(x, y):
        return ((x - x0) / g * scale, (y1 - y) / g * scale)

    pts = [px(x, y) for x, y in path_xy]  # Pillow clips what falls outside the map
    if len(pts) > 1:
        d.line(pts, fill=(255, 255, 255), width=2)
    fov = math.radians(camera.hfov_deg) / 2
    wedge = 25.0  # metres drawn
    for i, (x, y, yaw) in enumerate(poses):
        c = _COLOURS[i % len(_COLOURS)]
        a, b = px(x, y), px(x + wedge * math.cos(yaw + fov), y + wedge * math.sin(yaw + fov))
        e = px(x + wedge * math.cos(yaw - fov), y + wedge * math.sin(yaw - fov))
        d.line([b, a, e], fill=c, width=2)
        d.ellipse([a[0] - 4, a[1] - 4, a[0] + 4, a[1] + 4], fill=c, outline=(0, 0, 0))
        d.text((a[0] + 6, a[1] - 6), str(i + 1), fill=c)
    # scale bar: 20 m
    bar = 20.0 / g * scale
    d.line([(10, map_px - 12), (10 + bar, map_px - 12)], fill=(255, 255, 255), width=3)
    d.text((12, map_px - 26), "20 m", fill=(255, 255, 255))
    d.text((map_px - 22, 6), "N^", fill=(255, 255, 255))
    fh = map_px // max(len(frames), 1)
    fw = int(round(fh * camera.width / camera.height))
    canvas = Image.new("RGB", (map_px + fw + 6, map_px + (18 if title else 0)), (20, 20, 20))
    top = 18 if title else 0
    if title:
        ImageDraw.Draw(canvas).text((4, 3), title, fill=(230, 230, 230))
    canvas.paste(m, (0, top))
    cd = ImageDraw.Draw(canvas)
    for i, f in enumerate(frames):
        c = _COLOURS[i % len(_COLOURS)]
        y = top + i * fh
        canvas.paste(Image.fromarray(f).resize((fw, fh - 2), Image.BILINEAR), (map_px + 6, y))
        cd.rectangle([map_px + 6, y, map_px + 22, y + 14], fill=c)
        cd.text((map_px + 10, y + 1), str(i + 1), fill=(0, 0, 0))
    return canvas


def pick_preview_indices(distance_m: np.ndarray, count: int, span_m: float, start_m: float) -> List[int]:
    """Indices of ``count`` samples evenly spread over ``span_m`` metres of travel from ``start_m``."""
    targets = start_m + np.linspace(0, span_m, count)
    return [int(np.searchsorted(distance_m, t).clip(0, len(distance_m) - 1)) for t in targets]


def survey_gap_picture(seed: int = 8, size_m: float = 1000.0, centre: Optional[Tuple[float, float]] = None,
                       half_m: float = 60.0) -> "PIL.Image.Image":  # noqa: F821
    """The same orthophoto crop without and with the aerial-survey gap (``sim.survey``), side by side and
    labelled. ``centre`` None: the crop with the most parked cars and trees (where the gap shows most)."""
    from PIL import Image, ImageDraw

    from .generate import generate_world
    from .survey import SurveyGap, misregistration_displacement
    from .world import Sem

    off = generate_world(seed=seed, size_m=size_m)
    on = generate_world(seed=seed, size_m=size_m, survey=SurveyGap())
    if centre is None:
        step = half_m
        cands = np.arange(-size_m / 2 + half_m, size_m / 2 - half_m + 1e-9, step)
        score = []
        for cx in cands:
            for cy in cands:
                r, c = (int(v) for v in off.xy_to_rc(cx, cy))
                k = int(half_m / off.meta.gsd_m)
                win = off.semantic[max(r - k, 0):r + k, max(c - k, 0):c + k]
                score.append((3 * (win == Sem.CAR).sum() + (win == Sem.TREE).sum(), float(cx), float(cy)))
        centre = max(score)[1:]
    a, _ = ortho_crop(off, centre[0], centre[1], half_m)
    b, _ = ortho_crop(on, centre[0], centre[1], half_m)
    pad, top = 8, 36
    img = Image.new("RGB", (a.shape[1] * 2 + 3 * pad, a.shape[0] + top + pad), (255, 255, 255))
    img.paste(Image.fromarray(a), (pad, top))
    img.paste(Image.fromarray(b), (2 * pad + a.shape[1], top))
    d = ImageDraw.Draw(img)
    sv = on.survey
    dx, dy = (float(v) for v in misregistration_displacement(on, *centre))
    d.text((pad, 4), f"survey gap off (world seed {seed})", fill=(0, 0, 0))
    d.text((pad, 18), f"{2 * half_m:.0f} m crop at ({centre[0]:.0f}, {centre[1]:.0f})", fill=(0, 0, 0))
    x2 = 2 * pad + a.shape[1]
    d.text((x2, 4), f"survey gap on: {sv['season']}, sun az {sv['sun_azimuth_deg']:.0f} el "
                    f"{sv['sun_elevation_deg']:.0f} deg", fill=(0, 0, 0))
    d.text((x2, 18), f"{sv['cars']['removed']} of {sv['cars']['world_lot_cars']} lot cars moved, "
                     f"shift here ({dx:+.2f}, {dy:+.2f}) m", fill=(0, 0, 0))
    return img


# the presets of sim.conditions that change what the camera sees, in the contact sheet's order
CAMERA_PRESETS = ("clear", "busy", "dusk-rain", "night", "fog", "changed-road", "worst")


def conditions_sheet(seed: int = 8, size_m: float = 600.0, times: Sequence[float] = (), width: int = 512,
                     height: int = 288, drive_seed: int = 5, scale: float = 0.7,
                     colours: int = 256) -> "PIL.Image.Image":  # noqa: F821
    """Contact sheet of the drive-time conditions (``sim.conditions.PRESETS`` the camera sees): one row per
    preset, one column per time of one simulated drive (default: a pose early in the drive, the one with
    the most moving vehicles in view under `busy` and the one 25 m before the construction zone of
    `changed-road`), each frame labelled. Frames are shown at ``scale`` x their size and the sheet
    is reduced to ``colours`` colours (0: full RGB) to keep the PNG small. The same world, drive,
    appearance and sensor model in every row. Regenerate docs/img/conditions.png with ``python -c "from
    geoloc_ros.sim.preview import conditions_sheet as s; s().save('docs/img/conditions.png', optimize=True)"``."""
    from PIL import Image, ImageDraw, ImageFont

    from .conditions import PRESETS
    from .drive import plan_route, simulate_truth, stream_rng
    from .generate import generate_world
    from .render import Appearance, GroundRenderer, SensorModel
    world = generate_world(seed=seed, size_m=size_m)
    route = plan_route(world, stream_rng(drive_seed, "route"), 0.8 * size_m)
    duration = 40.0
    traj = simulate_truth(route, stream_rng(drive_seed, "truth"), duration,
                          kinds=[world.roads.edge_kind[e] for e, _ in route.steps])
    cam = PinholeCamera(width=width, height=height, hfov_deg=90.0)
    app = Appearance(seed=drive_seed, sun_azimuth_deg=215.0, sun_elevation_deg=35.0, parked_car_density=0.3)
    sensor = SensorModel()

    def pose(t):
        st = traj.at(t)
        return float(st.x), float(st.y), float(st.yaw)

    renderers = {name: GroundRenderer(world, cam, app, sensor=sensor, conditions=PRESETS[name], ego=traj)
                 for name in CAMERA_PRESETS}
    if not times:
        cands = np.arange(8.0, duration - 2.0, 0.5)
        tr = renderers["busy"]._scene.traffic
        half_fov = math.radians(cam.hfov_deg) / 2 - 0.1

        def in_view(t):  # moving vehicles 6-70 m ahead inside the field of view
            x, y, yaw = pose(t)
            vx, vy, _, vis = tr.at(t, (x, y, yaw))
            d = np.hypot(vx - x, vy - y)
            b = np.abs((np.arctan2(vy - y, vx - x) - yaw + math.pi) % (2 * math.pi) - math.pi)
            return int((vis & (d > 6.0) & (d < 70.0) & (b < half_fov)).sum())

        busiest = float(cands[int(np.argmax([in_view(t) for t in cands]))])
        zx, zy = renderers["changed-road"].realisation()["road_changes"]["construction_zone"]["xy"]

        def zone_gap(t):  # 25 m before the construction zone's middle, looking at it
            x, y, yaw = pose(t)
            ahead = (zx - x) * math.cos(yaw) + (zy - y) * math.sin(yaw)
            side = abs(-(zx - x) * math.sin(yaw) + (zy - y) * math.cos(yaw))
            return abs(ahead - 25.0) + 3.0 * side

        times = (4.0, busiest, float(cands[int(np.argmin([zone_gap(t) for t in cands]))]))
    try:
        font = ImageFont.load_default(size=15)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    pad, label = 4, 22
    fw, fh = int(round(width * scale)), int(round(height * scale))
    sheet = Image.new("RGB", (len(times) * (fw + pad) + pad, len(CAMERA_PRESETS) * (fh + label + pad) + pad),
                      (25, 25, 25))
    d = ImageDraw.Draw(sheet)
    for i, name in enumerate(CAMERA_PRESETS):
        r = renderers[name]
        c = PRESETS[name]
        real = r.realisation()
        bits = [f"traffic {c.traffic}" if c.traffic else "", c.time_of_day, c.weather,
                f"road changes {c.road_changes:g}" if c.road_changes else ""]
        if real.get("weather", {}).get("visibility_m"):
            bits.append(f"visibility {real['weather']['visibility_m']:.0f} m")
        if c.time_of_day == "dusk":
            bits.append(f"sun {real['lighting']['sun_elevation_deg']:.1f} deg")
        for j, t in enumerate(times):
            x0, y0 = pad + j * (fw + pad), pad + i * (fh + label + pad)
            frame = Image.fromarray(r.render(*pose(t), t=t))
            sheet.paste(frame.resize((fw, fh), Image.BOX) if scale != 1.0 else frame, (x0, y0 + label))
            d.text((x0 + 2, y0 + 2), f"{name}: {', '.join(b for b in bits if b)}  (t = {t:.0f} s)",
                   fill=(235, 235, 235), font=font)
    return sheet.quantize(colours, method=Image.Quantize.FASTOCTREE) if colours else sheet
