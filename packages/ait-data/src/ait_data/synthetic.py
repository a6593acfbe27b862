"""Synthetic rooms: the embedded default dataset (DESIGN.md §6).

Every sample is an indoor room (floor, four walls, ceiling) seen through NYU-like pinhole intrinsics and
filled with furniture-like objects standing on the floor. Everything is ray-cast analytically with
vectorised numpy (one ray per pixel, ray–plane / ray–sphere / ray–box / ray–cylinder intersections, nearest
hit wins), shaded with a Lambertian point light and procedural textures. Because the geometry is exact we
get, for free, metric depth, per-object visibility (instance masks) and boxes.

A depth sensor does not see everything: the ``depth`` map gets sensor-like holes (0) on dark surfaces, at
glancing angles, along depth discontinuities and in random dropout blobs, while ``depth_complete`` keeps the
full rendered depth. That gap is what the depth tokenizer's mask augmentation learns to fill.

Coordinates: world x to the right, y up (floor at y=0), z away from the back wall; the camera frame is the
usual x right, y down, z forward, and depth is the z coordinate in the camera frame (as in NYUv2).
"""

from __future__ import annotations

import bisect
import colorsys
import math
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch.utils.data import Dataset

# NYUv2 RGB camera (Silberman et al. 2012), for 640x480 images.
NYU_FX, NYU_FY, NYU_CX, NYU_CY = 518.8579, 519.46961, 325.58245, 253.73617
NYU_WIDTH, NYU_HEIGHT = 640, 480

# Category ids 1..C (COCO style); label = id - 1.
SYNTHETIC_CATEGORIES: list[dict[str, Any]] = [
    {"id": 1, "name": "box", "supercategory": "object"},
    {"id": 2, "name": "cabinet", "supercategory": "furniture"},
    {"id": 3, "name": "bed", "supercategory": "furniture"},
    {"id": 4, "name": "ball", "supercategory": "object"},
    {"id": 5, "name": "bin", "supercategory": "object"},
    {"id": 6, "name": "table", "supercategory": "furniture"},
    {"id": 7, "name": "chair", "supercategory": "furniture"},
    {"id": 8, "name": "lamp", "supercategory": "object"},
]
CATEGORY_NAMES = [c["name"] for c in SYNTHETIC_CATEGORIES]

MIN_SIZE, MAX_SIZE = 64, (480, 640)
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}

# Room surface ids (object primitives are numbered after them).
FLOOR, CEILING, WALL_LEFT, WALL_RIGHT, WALL_BACK, WALL_FRONT = range(6)
_ROOM_NORMALS = np.array(
    [[0, 1, 0], [0, -1, 0], [1, 0, 0], [-1, 0, 0], [0, 0, 1], [0, 0, -1]],
    dtype=np.float32,
)

# Texture kinds.
PLAIN, CHECKER, STRIPES, NOISE = range(4)
_NOISE_PERIOD = 16


def scaled_intrinsics(height: int, width: int) -> np.ndarray:
    """NYU intrinsics rescaled to a (height, width) image, as a 3x3 matrix.

    Scaling follows an image resize with pixel centres at integer coordinates:
    c' = (c + 0.5) * s - 0.5.
    """
    sx, sy = width / NYU_WIDTH, height / NYU_HEIGHT
    return np.array(
        [
            [NYU_FX * sx, 0.0, (NYU_CX + 0.5) * sx - 0.5],
            [0.0, NYU_FY * sy, (NYU_CY + 0.5) * sy - 0.5],
            [0.0, 0.0, 1.0],
        ]
    )


def split_seed(seed: int, split: str, index: int) -> np.random.SeedSequence:
    """The seed sequence of one sample: a pure function of (seed, split, index)."""
    code = _SPLIT_CODES.get(split, zlib.crc32(split.encode()) + len(_SPLIT_CODES))
    return np.random.SeedSequence([int(seed) & 0xFFFFFFFF, code, int(index)])


# --------------------------------------------------------------------------------------------------
# Primitives. Each works on a window of rays (arrays of the window's shape) from the shared camera
# origin and returns (t, aux): the ray parameter of the nearest hit (inf where missed) and whatever the
# normal computation needs later. Ray directions have camera-z = 1, so t is the depth.
# --------------------------------------------------------------------------------------------------


@dataclass
class Sphere:
    center: np.ndarray
    radius: float

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return self.center - self.radius, self.center + self.radius

    def intersect(self, o, dx, dy, dz):
        # Python floats keep the float32 ray arrays float32 (numpy float64 scalars would promote them).
        oc = (o - self.center).tolist()
        b = dx * oc[0] + dy * oc[1] + dz * oc[2]
        a = dx * dx + dy * dy + dz * dz
        disc = b * b - a * float(sum(v * v for v in oc) - self.radius**2)
        t = (-b - np.sqrt(np.maximum(disc, 0))) / a
        t[(disc <= 0) | (t <= 0)] = np.inf
        return t, None

    def normals(self, px, py, pz, aux):
        c, r = self.center, self.radius
        return (px - c[0]) / r, (py - c[1]) / r, (pz - c[2]) / r


@dataclass
class Box:
    """A box rotated by `yaw` about the vertical axis."""

    center: np.ndarray
    half: np.ndarray
    yaw: float

    def __post_init__(self):
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        self.axes = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])  # rows: local x, y, z in world
        # World normal of each face: code = 2 * axis + (ray travels along +axis, so it hits the - face).
        self.face_normals = np.concatenate([[ax, -ax] for ax in self.axes]).astype(np.float32)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        extent = np.abs(self.axes.T) @ self.half
        return self.center - extent, self.center + extent

    def intersect(self, o, dx, dy, dz):
        ol = (self.axes @ (o - self.center)).tolist()
        half = self.half.tolist()
        t_near = t_far = face = None
        for k, ax in enumerate(self.axes.tolist()):
            d = dx * ax[0] + dy * ax[1] + dz * ax[2]
            d[np.abs(d) < 1e-12] = 1e-12
            inv = 1.0 / d
            t1 = (-half[k] - ol[k]) * inv
            t2 = (half[k] - ol[k]) * inv
            lo = np.minimum(t1, t2)
            hi = np.maximum(t1, t2)
            code = 2 * k + (d > 0)
            if t_near is None:
                t_near, t_far, face = lo, hi, code
            else:
                later = lo > t_near
                face = np.where(later, code, face)
                t_near = np.maximum(t_near, lo)
                t_far = np.minimum(t_far, hi)
        t_near[(t_near > t_far) | (t_near <= 0)] = np.inf
        return t_near, face

    def normals(self, px, py, pz, face):
        n = self.face_normals[face]
        return n[:, 0], n[:, 1], n[:, 2]


@dataclass
class Cylinder:
    """A vertical cylinder with axis at (x, z), spanning heights y0..y1."""

    x: float
    z: float
    radius: float
    y0: float
    y1: float

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        r = self.radius
        return np.array([self.x - r, self.y0, self.z - r]), np.array([self.x + r, self.y1, self.z + r])

    def intersect(self, o, dx, dy, dz):
        o = [float(v) for v in o]
        ox, oz = o[0] - self.x, o[2] - self.z
        a = dx * dx + dz * dz
        b = dx * ox + dz * oz
        disc = b * b - a * (ox * ox + oz * oz - self.radius**2)
        t = (-b - np.sqrt(np.maximum(disc, 0))) / np.maximum(a, 1e-12)
        y = o[1] + t * dy
        t[(disc <= 0) | (t <= 0) | (y < self.y0) | (y > self.y1)] = np.inf
        # From outside the slab y0..y1 exactly one cap can face the camera.
        cap_y = self.y1 if o[1] > self.y1 else self.y0 if o[1] < self.y0 else None
        if cap_y is None:
            return t, np.zeros(t.shape, dtype=bool)
        safe_dy = np.where(np.abs(dy) < 1e-12, 1e-12, dy)
        tc = (cap_y - o[1]) / safe_dy
        cx, cz = ox + tc * dx, oz + tc * dz
        cap = (tc > 0) & (cx * cx + cz * cz <= self.radius**2) & (tc < t)
        return np.where(cap, tc, t), cap

    def normals(self, px, py, pz, cap):
        nx = np.where(cap, 0.0, (px - self.x) / self.radius)
        ny = np.where(cap, np.where(np.abs(py - self.y1) < np.abs(py - self.y0), 1.0, -1.0), 0.0)
        nz = np.where(cap, 0.0, (pz - self.z) / self.radius)
        return nx, ny, nz


@dataclass
class Material:
    color_a: np.ndarray  # albedo in [0, 1], RGB
    color_b: np.ndarray
    texture: int
    scale: float  # texture period in metres


@dataclass
class SceneObject:
    category: int  # label 0..C-1
    parts: list
    materials: list
    footprint: float  # radius of the floor footprint, for placement


# --------------------------------------------------------------------------------------------------
# Scene sampling
# --------------------------------------------------------------------------------------------------


def _random_color(rng: np.random.Generator, dark: bool = False) -> np.ndarray:
    hue, sat, val = rng.random(3)
    sat = 0.15 + 0.65 * sat
    val = 0.02 + 0.06 * val if dark else 0.35 + 0.6 * val
    return np.array(colorsys.hsv_to_rgb(hue, sat, val), dtype=np.float32)


_TEXTURE_CDF = [0.3, 0.5, 0.7]  # P(PLAIN) = 0.3, CHECKER 0.2, STRIPES 0.2, NOISE 0.3


def _random_material(rng: np.random.Generator, dark: bool = False) -> Material:
    a = _random_color(rng, dark)
    darker, pick, scale = rng.random(3)
    texture = bisect.bisect_right(_TEXTURE_CDF, pick)
    return Material(a, a * np.float32(0.55 + 0.35 * darker), texture, float(0.05 + 0.15 * scale))


def _make_object(rng: np.random.Generator, label: int) -> tuple[list, float]:
    """Primitives of one object centred at the origin of the floor, and its footprint radius."""
    name = CATEGORY_NAMES[label]
    yaw = (
        float(rng.choice([0.0, np.pi / 2]) + rng.normal(0, 0.15))
        if rng.random() < 0.7
        else rng.uniform(0, np.pi)
    )

    def box(x, y, z, hx, hy, hz):
        c, s = np.cos(yaw), np.sin(yaw)
        # Offsets (x, z) are given in the object's own frame.
        center = np.array([c * x - s * z, y, s * x + c * z])
        return Box(center, np.array([hx, hy, hz]), yaw)

    if name == "box":
        hx, hy, hz = rng.uniform(0.1, 0.3, size=3)
        return [box(0, hy, 0, hx, hy, hz)], float(np.hypot(hx, hz))
    if name == "cabinet":
        hx, hy, hz = rng.uniform(0.2, 0.5), rng.uniform(0.4, 1.0), rng.uniform(0.18, 0.3)
        return [box(0, hy, 0, hx, hy, hz)], float(np.hypot(hx, hz))
    if name == "bed":
        hx, hy, hz = rng.uniform(0.45, 0.9), rng.uniform(0.2, 0.3), rng.uniform(0.7, 1.0)
        head = box(0, rng.uniform(0.45, 0.55), -hz - 0.03, hx, rng.uniform(0.45, 0.55), 0.03)
        return [box(0, hy, 0, hx, hy, hz), head], float(np.hypot(hx, hz + 0.06))
    if name == "ball":
        r = rng.uniform(0.1, 0.35)
        return [Sphere(np.array([0.0, r, 0.0]), float(r))], float(r)
    if name == "bin":
        r, h = rng.uniform(0.12, 0.3), rng.uniform(0.3, 0.8)
        return [Cylinder(0.0, 0.0, float(r), 0.0, float(h))], float(r)
    if name == "table":
        hx, hz, h = rng.uniform(0.3, 0.8), rng.uniform(0.3, 0.6), rng.uniform(0.65, 0.8)
        leg = 0.025
        parts = [box(0, h - 0.02, 0, hx, 0.02, hz)]
        for sx in (-1, 1):
            for sz in (-1, 1):
                parts.append(
                    box(sx * (hx - 2 * leg), (h - 0.04) / 2, sz * (hz - 2 * leg), leg, (h - 0.04) / 2, leg)
                )
        return parts, float(np.hypot(hx, hz))
    if name == "chair":
        hs, h = rng.uniform(0.18, 0.25), rng.uniform(0.42, 0.5)
        leg = 0.02
        parts = [box(0, h - 0.025, 0, hs, 0.025, hs), box(0, h + 0.25, -hs + 0.02, hs, 0.25, 0.02)]
        for sx in (-1, 1):
            for sz in (-1, 1):
                parts.append(box(sx * (hs - leg), (h - 0.05) / 2, sz * (hs - leg), leg, (h - 0.05) / 2, leg))
        return parts, float(hs * 1.42)
    if name == "lamp":
        h, r = rng.uniform(1.2, 1.7), rng.uniform(0.12, 0.22)
        return [
            Cylinder(0.0, 0.0, 0.15, 0.0, 0.03),
            Cylinder(0.0, 0.0, 0.015, 0.03, float(h - 0.1)),
            Cylinder(0.0, 0.0, float(r), float(h - 0.25), float(h)),
        ], float(max(r, 0.15))
    raise AssertionError(name)


def _translate(part, x: float, z: float):
    if isinstance(part, Sphere):
        return Sphere(part.center + np.array([x, 0.0, z]), part.radius)
    if isinstance(part, Box):
        return Box(part.center + np.array([x, 0.0, z]), part.half, part.yaw)
    return Cylinder(part.x + x, part.z + z, part.radius, part.y0, part.y1)


@dataclass
class Scene:
    room: np.ndarray  # (width x, height y, depth z) in metres
    origin: np.ndarray  # camera position (world)
    right: np.ndarray  # camera axes in world coordinates
    down: np.ndarray
    forward: np.ndarray
    objects: list[SceneObject]
    room_materials: list[Material]
    light: np.ndarray
    ambient: float
    noise_table: np.ndarray  # (period, period) value-noise lattice
    blobs: np.ndarray  # (k, 4) dropout ellipses: cy, cx, ry, rx as fractions of the image

    @property
    def camera_axes(self) -> np.ndarray:
        """(3, 3) world -> camera: columns are the right, down and forward axes."""
        return np.stack([self.right, self.down, self.forward], axis=1)


def sample_scene(rng: np.random.Generator, num_objects: tuple[int, int] = (3, 8)) -> Scene:
    """Draw one room, camera, lights and objects."""
    room = np.array([rng.uniform(3.0, 6.0), rng.uniform(2.4, 3.2), rng.uniform(3.5, 7.0)])
    origin = np.array([rng.uniform(0.35, 0.65) * room[0], rng.uniform(1.1, 1.7), rng.uniform(0.2, 0.8)])
    yaw, pitch, roll = rng.uniform(-0.35, 0.35), rng.uniform(0.05, 0.35), rng.uniform(-0.03, 0.03)
    forward = np.array([np.sin(yaw) * np.cos(pitch), -np.sin(pitch), np.cos(yaw) * np.cos(pitch)])
    right = np.array([np.cos(yaw), 0.0, -np.sin(yaw)])
    down = np.cross(right, forward)
    right, down = np.cos(roll) * right + np.sin(roll) * down, -np.sin(roll) * right + np.cos(roll) * down

    wall = _random_material(rng)
    wall.texture = int(rng.choice([PLAIN, STRIPES, NOISE], p=[0.5, 0.25, 0.25]))
    wall.color_a = np.clip(wall.color_a * 0.4 + 0.55, 0, 1).astype(np.float32)  # walls are light
    wall.color_b = np.clip(wall.color_a * 0.9, 0, 1).astype(np.float32)
    floor = _random_material(rng)
    floor.texture = int(rng.choice([CHECKER, NOISE, STRIPES], p=[0.4, 0.4, 0.2]))
    floor.scale = float(rng.uniform(0.2, 0.6))
    ceiling = Material(np.full(3, 0.9, np.float32), np.full(3, 0.85, np.float32), PLAIN, 1.0)
    room_materials = [floor, ceiling, wall, wall, wall, wall]

    objects: list[SceneObject] = []
    placed: list[tuple[float, float, float]] = []
    for _ in range(int(rng.integers(num_objects[0], num_objects[1] + 1))):
        label = int(rng.integers(len(SYNTHETIC_CATEGORIES)))
        parts, radius = _make_object(rng, label)
        # Scalar geometry in plain Python: numpy's per-call overhead dominates at small image sizes.
        cam_x, cam_z, room_x, room_z = float(origin[0]), float(origin[2]), float(room[0]), float(room[2])
        for _attempt in range(20):
            angle, dist = yaw + rng.uniform(-0.5, 0.5), rng.uniform(1.0, 5.0)
            x = min(max(cam_x + dist * math.sin(angle), radius + 0.02), room_x - radius - 0.02)
            z = min(max(cam_z + dist * math.cos(angle), radius + 0.02), room_z - radius - 0.02)
            clear_of_camera = math.hypot(x - cam_x, z - cam_z) > radius + 0.5
            if clear_of_camera and all(math.hypot(x - px, z - pz) > radius + pr for px, pz, pr in placed):
                placed.append((x, z, radius))
                dark = rng.random() < 0.15  # black furniture: a depth sensor sees nothing there
                mats = [_random_material(rng, dark) for _ in parts]
                objects.append(SceneObject(label, [_translate(p, x, z) for p in parts], mats, radius))
                break

    light = np.array([rng.uniform(0.3, 0.7) * room[0], room[1] - 0.15, rng.uniform(0.3, 0.8) * room[2]])
    n_blobs = int(rng.integers(1, 4))
    blobs = np.column_stack(
        [rng.random(n_blobs), rng.random(n_blobs), rng.uniform(0.02, 0.08, (2, n_blobs)).T]
    )
    return Scene(
        room=room,
        origin=origin,
        right=right,
        down=down,
        forward=forward,
        objects=objects,
        room_materials=room_materials,
        light=light,
        ambient=float(rng.uniform(0.25, 0.4)),
        noise_table=rng.random((_NOISE_PERIOD, _NOISE_PERIOD)).astype(np.float32),
        blobs=blobs,
    )


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------


def _value_noise(u: np.ndarray, v: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Bilinear value noise on a periodic lattice."""
    n = table.shape[0]
    fu, fv = np.floor(u), np.floor(v)
    au, av = u - fu, v - fv
    iu = fu.astype(np.int64) % n
    iv = fv.astype(np.int64) % n
    ju, jv = (iu + 1) % n, (iv + 1) % n
    top = table[iv, iu] * (1 - au) + table[iv, ju] * au
    bottom = table[jv, iu] * (1 - au) + table[jv, ju] * au
    return top * (1 - av) + bottom * av


_CUBE_CORNERS = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], dtype=np.float64)


def _image_window(part, scene: Scene, K: np.ndarray, height: int, width: int):
    """Pixel rectangle (r0, r1, c0, c1) that contains the part's projection, or None if off-screen."""
    lo, hi = part.bounds()
    cam = (lo + (hi - lo) * _CUBE_CORNERS - scene.origin) @ scene.camera_axes  # (8, 3): right, down, forward
    zc = cam[:, 2]
    if zc.min() < 0.05:  # straddles the image plane: test every pixel
        return 0, height, 0, width
    u = (K[0, 0] * cam[:, 0] / zc + K[0, 2]).tolist()
    v = (K[1, 1] * cam[:, 1] / zc + K[1, 2]).tolist()
    c0, c1 = max(math.floor(min(u)) - 1, 0), min(math.ceil(max(u)) + 2, width)
    r0, r1 = max(math.floor(min(v)) - 1, 0), min(math.ceil(max(v)) + 2, height)
    if c0 >= c1 or r0 >= r1:
        return None
    return r0, r1, c0, c1


@dataclass
class SensorModel:
    """Where a structured-light depth sensor returns nothing (thresholds are illustrative, not fitted)."""

    dark_albedo: float = 0.1  # luminance of the surface colour below which no return
    glancing_cos: float = 0.12  # |cos| between ray and normal below which no return
    edge_relative_jump: float = 0.05  # neighbour depth jump (relative) that marks an edge
    max_depth: float = 10.0
    dropout_blobs: bool = True  # 1-3 random elliptical holes per image

    @classmethod
    def perfect(cls) -> SensorModel:
        """A sensor without holes (depth == depth_complete)."""
        return cls(
            dark_albedo=0.0,
            glancing_cos=0.0,
            edge_relative_jump=np.inf,
            max_depth=np.inf,
            dropout_blobs=False,
        )


def _cast_room(scene: Scene, dx, dy, dz):
    """The camera is inside an axis-aligned box, so every ray leaves through exactly one of its faces."""
    o, room = scene.origin.tolist(), scene.room.tolist()
    depth = surface = None
    for axis, d, (low_id, high_id) in (
        (0, dx, (WALL_LEFT, WALL_RIGHT)),
        (1, dy, (FLOOR, CEILING)),
        (2, dz, (WALL_BACK, WALL_FRONT)),
    ):
        positive = d > 0
        safe = np.where(np.abs(d) < 1e-9, np.float32(1e-9), d)
        t = np.where(positive, np.float32(room[axis] - o[axis]), np.float32(-o[axis])) / safe
        ids = np.where(positive, np.int16(high_id), np.int16(low_id))
        if depth is None:
            depth, surface = t, ids
        else:
            nearer = t < depth
            depth = np.where(nearer, t, depth)
            surface = np.where(nearer, ids, surface)
    return depth, surface


def _texture_pattern(kind, tu, tv, noise_table) -> np.ndarray:
    """Texture value in [0, 1] per pixel; each kind is evaluated only on its own pixels."""
    pattern = np.zeros(kind.shape, dtype=np.float32)
    for texture in (CHECKER, STRIPES, NOISE):
        selected = kind == texture
        if not selected.any():
            continue
        u, v = tu[selected], tv[selected]
        if texture == CHECKER:
            pattern[selected] = (np.floor(u) + np.floor(v)) % 2
        elif texture == STRIPES:
            pattern[selected] = np.floor(u) % 2
        else:
            pattern[selected] = _value_noise(u * 2, v * 2, noise_table)
    return pattern


def _sensor_holes(scene, sensor, depth, albedo, nx, ny, nz, dx, dy, dz, ray_norm) -> np.ndarray:
    """Pixels a structured-light sensor would miss: dark, glancing, edges, far, random blobs."""
    height, width = depth.shape
    cos_view = np.abs(nx * dx + ny * dy + nz * dz) / ray_norm
    luminance = 0.299 * albedo[0] + 0.587 * albedo[1] + 0.114 * albedo[2]
    invalid = (luminance < sensor.dark_albedo) | (cos_view < sensor.glancing_cos) | (depth > sensor.max_depth)
    jump = sensor.edge_relative_jump
    jump_x = np.abs(np.diff(depth, axis=1)) > jump * np.minimum(depth[:, 1:], depth[:, :-1])
    jump_y = np.abs(np.diff(depth, axis=0)) > jump * np.minimum(depth[1:], depth[:-1])
    invalid[:, 1:] |= jump_x
    invalid[:, :-1] |= jump_x
    invalid[1:] |= jump_y
    invalid[:-1] |= jump_y
    for cy, cx, ry, rx in scene.blobs if sensor.dropout_blobs else ():
        ry_px, rx_px = max(ry * height, 1.5), max(rx * width, 1.5)
        y0, y1 = max(int(cy * height - ry_px), 0), min(int(cy * height + ry_px) + 1, height)
        x0, x1 = max(int(cx * width - rx_px), 0), min(int(cx * width + rx_px) + 1, width)
        yy = ((np.arange(y0, y1) - cy * height) / ry_px)[:, None]
        xx = ((np.arange(x0, x1) - cx * width) / rx_px)[None, :]
        invalid[y0:y1, x0:x1] |= yy * yy + xx * xx <= 1
    return invalid


def render(scene: Scene, height: int, width: int, sensor: SensorModel | None = None) -> dict[str, Any]:
    """Ray-cast one scene. Returns image, depth, depth_complete, and the per-pixel object index (-1: room).

    All per-pixel arithmetic stays float32; scalars enter as Python floats (a numpy float64 scalar would
    promote whole images to float64 and halve the speed).
    """
    sensor = sensor or SensorModel()
    K = scaled_intrinsics(height, width)
    a = ((np.arange(width) - K[0, 2]) / K[0, 0]).astype(np.float32)[None, :]
    b = ((np.arange(height) - K[1, 2]) / K[1, 1]).astype(np.float32)[:, None]
    r, dn, f = scene.right.tolist(), scene.down.tolist(), scene.forward.tolist()
    # Ray directions in world coordinates with camera-z = 1 (so the hit parameter t is the depth).
    dx = a * r[0] + b * dn[0] + f[0]
    dy = a * r[1] + b * dn[1] + f[1]
    dz = a * r[2] + b * dn[2] + f[2]
    origin = scene.origin
    o = origin.tolist()

    depth, surface = _cast_room(scene, dx, dy, dz)
    nx = _ROOM_NORMALS[:, 0][surface]
    ny = _ROOM_NORMALS[:, 1][surface]
    nz = _ROOM_NORMALS[:, 2][surface]
    obj = np.full((height, width), -1, dtype=np.int16)
    materials = list(scene.room_materials)

    for k, scene_object in enumerate(scene.objects):
        for part, material in zip(scene_object.parts, scene_object.materials):
            sid = len(materials)
            materials.append(material)
            window = _image_window(part, scene, K, height, width)
            if window is None:
                continue
            r0, r1, c0, c1 = window
            win = (slice(r0, r1), slice(c0, c1))
            wdx, wdy, wdz = dx[win], dy[win], dz[win]
            t, aux = part.intersect(origin, wdx, wdy, wdz)
            closer = t < depth[win]
            if not closer.any():
                continue
            tc = t[closer]
            depth[win][closer] = tc
            surface[win][closer] = sid
            obj[win][closer] = k
            px, py, pz = o[0] + tc * wdx[closer], o[1] + tc * wdy[closer], o[2] + tc * wdz[closer]
            n = part.normals(px, py, pz, None if aux is None else aux[closer])
            nx[win][closer], ny[win][closer], nz[win][closer] = n

    px, py, pz = o[0] + depth * dx, o[1] + depth * dy, o[2] + depth * dz

    # Procedural texture, projected on the plane the surface mostly faces.
    ax, ay, az = np.abs(nx), np.abs(ny), np.abs(nz)
    floorish = ay >= np.maximum(ax, az)
    sideways = ~floorish & (ax >= az)
    inv_scale = np.array([1.0 / m.scale for m in materials], dtype=np.float32)[surface]
    tu = np.where(sideways, pz, px) * inv_scale
    tv = np.where(floorish, pz, py) * inv_scale
    kind = np.array([m.texture for m in materials], dtype=np.int8)[surface]
    pattern = _texture_pattern(kind, tu, tv, scene.noise_table)
    # Colour planes (3, H, W): broadcasting over a leading axis is much faster than over a trailing 3.
    color_a = np.stack([m.color_a for m in materials], axis=1)
    color_step = np.stack([m.color_b for m in materials], axis=1) - color_a
    albedo = np.take(color_a, surface, axis=1) + np.take(color_step, surface, axis=1) * pattern

    # Lambertian shading: ambient + a point light with soft distance falloff.
    light = scene.light.tolist()
    lx, ly, lz = light[0] - px, light[1] - py, light[2] - pz
    dist2 = lx * lx + ly * ly + lz * lz
    cos_light = np.maximum((nx * lx + ny * ly + nz * lz) / np.sqrt(dist2), 0)
    shade = scene.ambient + (1.2 - scene.ambient) * cos_light / (1 + dist2 * (1 / 16))
    rgb = np.sqrt(np.clip(albedo * shade, 0, 1))  # gamma 2 for display
    image = np.ascontiguousarray((rgb * 255 + 0.5).astype(np.uint8).transpose(1, 2, 0))

    ray_norm = np.sqrt(a * a + b * b + 1)  # |d| does not depend on the camera rotation
    invalid = _sensor_holes(scene, sensor, depth, albedo, nx, ny, nz, dx, dy, dz, ray_norm)
    sensor_depth = np.where(invalid, np.float32(0), depth)
    return {"image": image, "depth": sensor_depth, "depth_complete": depth, "object_index": obj}


def instances_from_index_map(
    object_index: np.ndarray, categories: np.ndarray, min_area: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Masks (N,H,W) of the visible objects with at least `min_area` pixels, their xyxy boxes and labels.

    Boxes cover whole pixels: x2 = last column + 1 (the COCO convention, so a box from a mask round-trips
    through COCO's xywh exactly).
    """
    counts = np.bincount(object_index.ravel() + 1, minlength=len(categories) + 1)[1:]
    keep = np.flatnonzero(counts >= min_area)
    masks = object_index[None] == keep[:, None, None].astype(object_index.dtype)
    rows, cols = masks.any(axis=2), masks.any(axis=1)
    h, w = object_index.shape
    boxes = np.stack(
        [
            cols.argmax(axis=1),
            rows.argmax(axis=1),
            w - cols[:, ::-1].argmax(axis=1),
            h - rows[:, ::-1].argmax(axis=1),
        ],
        axis=1,
    ).astype(np.float32)
    return masks, boxes.reshape(-1, 4), categories[keep].astype(np.int64)


class SyntheticRooms(Dataset):
    """Procedurally rendered rooms (a torch Dataset of numpy dicts), deterministic per (seed, split, index).

    Each sample: ``image`` uint8 (H,W,3); ``depth`` float32 (H,W), metres with sensor-like holes (0);
    ``depth_complete`` float32 (H,W) without holes; ``boxes`` float32 (N,4) xyxy; ``labels`` int64 (N,)
    in 0..C-1; ``masks`` bool (N,H,W); ``image_id`` int (the index).
    """

    def __init__(
        self,
        length: int = 1000,
        height: int = 96,
        width: int = 96,
        seed: int = 0,
        split: str = "train",
        num_objects: tuple[int, int] = (3, 8),
        min_area_fraction: float = 4e-4,
        sensor: SensorModel | None = None,
    ):
        if length < 0:
            raise ValueError(f"length must be >= 0, got {length}")
        if not (MIN_SIZE <= height <= MAX_SIZE[0] and MIN_SIZE <= width <= MAX_SIZE[1]):
            raise ValueError(
                f"size must be between {MIN_SIZE}x{MIN_SIZE} and {MAX_SIZE[0]}x{MAX_SIZE[1]} (HxW), "
                f"got {height}x{width}"
            )
        if not (0 <= num_objects[0] <= num_objects[1]):
            raise ValueError(f"num_objects must be (low, high) with 0 <= low <= high, got {num_objects}")
        self.length, self.height, self.width = int(length), int(height), int(width)
        self.seed, self.split = int(seed), str(split)
        self.num_objects = tuple(num_objects)
        self.sensor = sensor or SensorModel()
        # Objects smaller than this are dropped (the same fraction of the image at every resolution).
        self.min_area = max(4, round(min_area_fraction * height * width))
        self.categories = [dict(c) for c in SYNTHETIC_CATEGORIES]
        self.num_classes = len(self.categories)
        self.label_to_category_id = [c["id"] for c in self.categories]
        self.intrinsics = scaled_intrinsics(height, width)

    def __len__(self) -> int:
        return self.length

    def scene(self, index: int) -> Scene:
        return sample_scene(np.random.default_rng(split_seed(self.seed, self.split, index)), self.num_objects)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for SyntheticRooms of length {self.length}")
        scene = self.scene(index)
        out = render(scene, self.height, self.width, self.sensor)
        categories = np.array([o.category for o in scene.objects], dtype=np.int64)
        masks, boxes, labels = instances_from_index_map(out["object_index"], categories, self.min_area)
        return {
            "image": out["image"],
            "depth": out["depth"],
            "depth_complete": out["depth_complete"],
            "boxes": boxes,
            "labels": labels,
            "masks": masks,
            "image_id": index,
        }

    def __repr__(self) -> str:
        return (
            f"SyntheticRooms(length={self.length}, height={self.height}, width={self.width}, "
            f"seed={self.seed}, split={self.split!r})"
        )
