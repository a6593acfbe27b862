import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ait_data import SYNTHETIC_CATEGORIES, SensorModel, SyntheticRooms, scaled_intrinsics
from ait_data.synthetic import Box, Cylinder, Sphere


def mask_extent(mask: np.ndarray) -> list[float]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]


def check_sample(s, height, width, num_classes, min_area):
    assert s["image"].shape == (height, width, 3) and s["image"].dtype == np.uint8
    assert s["depth"].shape == (height, width) and s["depth"].dtype == np.float32
    assert s["depth_complete"].dtype == np.float32
    complete, depth = s["depth_complete"], s["depth"]
    assert np.isfinite(complete).all() and complete.min() > 0 and complete.max() < 10
    # The sensor depth is the complete depth where valid, 0 elsewhere.
    assert np.array_equal(depth[depth > 0], complete[depth > 0])
    n = len(s["labels"])
    assert s["masks"].shape == (n, height, width) and s["masks"].dtype == np.bool_
    assert s["boxes"].shape == (n, 4) and s["boxes"].dtype == np.float32
    assert s["labels"].dtype == np.int64 and np.all((0 <= s["labels"]) & (s["labels"] < num_classes))
    assert np.all(s["masks"].sum(axis=(1, 2)) >= min_area)
    assert s["masks"].sum(axis=0).max(initial=0) <= 1  # visible pixels belong to one object
    for box, mask in zip(s["boxes"], s["masks"]):
        assert box.tolist() == mask_extent(mask)


@settings(max_examples=8, deadline=None)
@given(height=st.integers(64, 160), width=st.integers(64, 200), index=st.integers(0, 10_000))
@example(height=64, width=64, index=0)
@example(height=480, width=640, index=3)
def test_shapes_dtypes_and_consistency_at_any_size(height, width, index):
    ds = SyntheticRooms(length=10_001, height=height, width=width, seed=3)
    check_sample(ds[index], height, width, ds.num_classes, ds.min_area)


def test_deterministic_per_seed_split_index():
    a = SyntheticRooms(length=5, height=64, width=80, seed=11)
    b = SyntheticRooms(length=5, height=64, width=80, seed=11)
    for key in ("image", "depth", "depth_complete", "masks", "boxes", "labels"):
        assert np.array_equal(a[2][key], b[2][key])
    assert not np.array_equal(a[2]["image"], a[3]["image"])
    assert not np.array_equal(
        a[2]["image"], SyntheticRooms(length=5, height=64, width=80, seed=12)[2]["image"]
    )
    test_split = SyntheticRooms(length=5, height=64, width=80, seed=11, split="test")
    assert not np.array_equal(a[2]["image"], test_split[2]["image"])
    # The scene does not depend on the resolution: same room, same objects.
    big = SyntheticRooms(length=5, height=128, width=160, seed=11)
    assert sorted(big.scene(2).room.tolist()) == sorted(a.scene(2).room.tolist())


def test_sensor_like_invalid_regions(small_rooms):
    fractions = [float((small_rooms[i]["depth"] == 0).mean()) for i in range(len(small_rooms))]
    assert all(0.005 < f < 0.6 for f in fractions), fractions


def test_each_invalid_mechanism():
    kwargs = dict(length=4, height=96, width=128, seed=5)
    perfect = SyntheticRooms(sensor=SensorModel.perfect(), **kwargs)
    for i in range(4):
        s = perfect[i]
        assert np.array_equal(s["depth"], s["depth_complete"])

    # Edges only: holes sit next to a depth discontinuity (an object's outline or its occluder).
    edges = SyntheticRooms(sensor=SensorModel(dark_albedo=0, glancing_cos=0, dropout_blobs=False), **kwargs)
    s = edges[0]
    holes = s["depth"] == 0
    assert holes.any()
    d = s["depth_complete"]
    jump = np.zeros_like(holes)
    rel = np.abs(np.diff(d, axis=1)) > 0.05 * np.minimum(d[:, 1:], d[:, :-1])
    jump[:, 1:] |= rel
    jump[:, :-1] |= rel
    rel = np.abs(np.diff(d, axis=0)) > 0.05 * np.minimum(d[1:], d[:-1])
    jump[1:] |= rel
    jump[:-1] |= rel
    assert np.array_equal(holes, jump)

    # Blobs only: 1-3 filled ellipses.
    blobs = SyntheticRooms(
        sensor=SensorModel(dark_albedo=0, glancing_cos=0, edge_relative_jump=np.inf), **kwargs
    )
    assert all((blobs[i]["depth"] == 0).any() for i in range(4))

    # Dark surfaces only: every hole is on a dark (low-albedo) pixel of the image.
    dark = SyntheticRooms(
        sensor=SensorModel(glancing_cos=0, edge_relative_jump=np.inf, dropout_blobs=False),
        length=40,
        height=64,
        width=64,
    )
    found = False
    for i in range(40):
        s = dark[i]
        holes = s["depth"] == 0
        if holes.any():
            found = True
            assert s["image"][holes].mean() < 0.5 * s["image"][~holes].mean()
    assert found


def test_categories_and_labels():
    ds = SyntheticRooms(length=30, height=64, width=64)
    assert 6 <= ds.num_classes == len(SYNTHETIC_CATEGORIES) <= 80
    assert [c["id"] for c in ds.categories] == list(range(1, ds.num_classes + 1)) == ds.label_to_category_id
    assert len({c["name"] for c in ds.categories}) == ds.num_classes
    seen = set()
    for i in range(30):
        seen.update(ds[i]["labels"].tolist())
    assert len(seen) >= 6
    assert ds[0]["image_id"] == 0 and ds[29]["image_id"] == 29


def test_intrinsics_are_nyu_scaled():
    k = scaled_intrinsics(480, 640)
    assert np.allclose([k[0, 0], k[1, 1], k[0, 2], k[1, 2]], [518.8579, 519.46961, 325.58245, 253.73617])
    half = scaled_intrinsics(240, 320)
    assert half[0, 0] == pytest.approx(518.8579 / 2) and half[1, 1] == pytest.approx(519.46961 / 2)
    # pixel-centre convention: (c + 0.5) / 2 - 0.5
    assert half[0, 2] == pytest.approx((325.58245 + 0.5) / 2 - 0.5)
    assert SyntheticRooms(length=1, height=96, width=96).intrinsics[0, 0] == pytest.approx(
        518.8579 * 96 / 640
    )


def _rays(*dirs):
    d = np.array(dirs, dtype=np.float64)
    return d[:, 0], d[:, 1], d[:, 2]


def test_primitive_intersections_by_hand():
    o = np.zeros(3)
    dx, dy, dz = _rays([0, 0, 1], [0.5, 0, 1], [0.1, 0.1, 1])
    t, _ = Sphere(np.array([0.0, 0.0, 5.0]), 1.0).intersect(o, dx.copy(), dy.copy(), dz.copy())
    assert t[0] == pytest.approx(4.0) and np.isinf(t[1])  # 0.5 slope misses a unit sphere at distance 5
    # (0.1, 0.1, 1) t: |t d - c|^2 = 1 -> 1.02 t^2 - 10 t + 24 = 0
    assert t[2] == pytest.approx((10 - np.sqrt(100 - 4 * 1.02 * 24)) / (2 * 1.02))

    box = Box(np.array([0.0, 0.0, 5.0]), np.array([1.0, 1.0, 1.0]), yaw=0.0)
    t, face = box.intersect(o, dx.copy(), dy.copy(), dz.copy())
    assert t[0] == pytest.approx(4.0) and np.isinf(t[1]) and t[2] == pytest.approx(4.0)
    n = box.normals(None, None, None, face[:1])
    assert np.allclose(np.stack(n, axis=-1), [[0, 0, -1]])
    rotated = Box(np.array([0.0, 0.0, 5.0]), np.array([1.0, 1.0, 1.0]), yaw=np.pi / 4)
    t, _ = rotated.intersect(o, dx.copy(), dy.copy(), dz.copy())
    assert t[0] == pytest.approx(5 - np.sqrt(2))  # a corner faces the camera

    cyl = Cylinder(0.0, 5.0, 1.0, -1.0, 1.0)
    t, cap = cyl.intersect(o, dx.copy(), dy.copy(), dz.copy())
    assert t[0] == pytest.approx(4.0) and not cap[0] and np.isinf(t[1])
    # Seen from above, the top cap is hit first.
    above = np.array([0.0, 3.0, 5.0])
    t, cap = cyl.intersect(above, *_rays([0, -1, 0.0001]))
    assert t[0] == pytest.approx(2.0) and cap[0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(height=32, width=64), "between 64x64"),
        (dict(height=64, width=641), "480x640"),
        (dict(length=-1), "length"),
        (dict(num_objects=(3, 1)), "num_objects"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SyntheticRooms(**kwargs)


def test_index_out_of_range():
    ds = SyntheticRooms(length=2, height=64, width=64)
    with pytest.raises(IndexError):
        ds[2]
    assert len(list(ds)) == 2


def test_empty_rooms_have_no_instances():
    s = SyntheticRooms(length=1, height=64, width=64, num_objects=(0, 0))[0]
    assert s["masks"].shape == (0, 64, 64) and s["boxes"].shape == (0, 4) and s["labels"].shape == (0,)
    assert (s["depth_complete"] > 0).all()
