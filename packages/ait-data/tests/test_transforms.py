import numpy as np
import pytest
import torch

from ait_data import COCO_MEAN, COCO_STD, DepthTransform, InstanceTransform, SyntheticRooms, collate
from ait_data.transforms import crop, hflip, to_tv_sample


def extent(mask: torch.Tensor) -> list[float]:
    rows = torch.nonzero(mask.any(dim=1)).flatten()
    cols = torch.nonzero(mask.any(dim=0)).flatten()
    return [float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)]


@pytest.fixture(scope="module")
def room():
    return SyntheticRooms(length=4, height=64, width=96, seed=21)[1]


def test_flip_twice_is_identity_and_boxes_follow_masks(room):
    tv = to_tv_sample(room)
    flipped = hflip(tv)
    for box, mask in zip(flipped["boxes"], flipped["masks"]):
        assert box.tolist() == extent(mask)
    back = hflip(flipped)
    for key in ("image", "depth", "depth_complete", "boxes", "masks"):
        assert torch.equal(back[key], tv[key]), key
    assert torch.equal(flipped["image"][..., 0], tv["image"][..., -1])


def test_crop_keeps_masks_inside_boxes(room):
    tv = crop(to_tv_sample(room), 10, 20, 40, 50)
    assert tv["image"].shape == (3, 40, 50) and tv["depth"].shape == (1, 40, 50)
    assert torch.equal(tv["depth"][0], torch.from_numpy(room["depth"][10:50, 20:70]))
    for box, mask in zip(tv["boxes"], tv["masks"]):
        if mask.any():
            x1, y1, x2, y2 = extent(mask)
            assert box[0] <= x1 and box[1] <= y1 and x2 <= box[2] and y2 <= box[3]
        assert 0 <= box[0] <= box[2] <= 50 and 0 <= box[1] <= box[3] <= 40


def test_depth_transform_test_mode_is_plain_conversion(room):
    out = DepthTransform(train=False)(room)
    assert out["image"].dtype == torch.float32 and out["image"].shape == (3, 64, 96)
    assert torch.equal(out["image"], torch.from_numpy(room["image"]).permute(2, 0, 1).float() / 255)
    assert torch.equal(out["depth"][0], torch.from_numpy(room["depth"]))
    assert torch.equal(out["depth_complete"][0], torch.from_numpy(room["depth_complete"]))
    assert out["image_id"] == room["image_id"]


def test_depth_transform_geometry_is_joint(room):
    t = DepthTransform(crop=(48, 64), cutdepth_every=0, photometric_p=0.0, seed=3)
    image = torch.from_numpy(room["image"]).permute(2, 0, 1).float() / 255
    depth = torch.from_numpy(room["depth_complete"])
    flips = set()
    for _ in range(8):
        out = t(room)
        assert out["image"].shape == (3, 48, 64) and out["depth"].shape == (1, 48, 64)
        found = False
        for flipped in (False, True):
            img, dep = (image.flip(-1), depth.flip(-1)) if flipped else (image, depth)
            for top in range(64 - 48 + 1):
                for left in range(96 - 64 + 1):
                    if torch.equal(dep[top : top + 48, left : left + 64], out["depth_complete"][0]):
                        assert torch.equal(img[:, top : top + 48, left : left + 64], out["image"])
                        found = True
                        flips.add(flipped)
                        break
                if found:
                    break
            if found:
                break
        assert found
        sensor = out["depth"][0]
        assert torch.equal(sensor[sensor > 0], out["depth_complete"][0][sensor > 0])
    assert flips == {False, True}


def test_cutdepth_every_fourth_sample(room):
    t = DepthTransform(crop=None, flip_p=0.0, photometric_p=0.0, seed=0)
    image = torch.from_numpy(room["image"]).permute(2, 0, 1).float() / 255
    strip_value = (torch.from_numpy(room["depth"]) / 10).clamp(0, 1)
    for k in range(8):
        out = t(room)["image"]
        changed = (out != image).any(dim=0).any(dim=0)
        if k % 4 == 0:
            cols = torch.nonzero(changed).flatten()
            assert len(cols) >= 1
            # every channel of the strip holds depth / max_depth
            strip = out[:, :, cols[0] : cols[-1] + 1]
            assert torch.equal(strip, strip_value[:, cols[0] : cols[-1] + 1].expand_as(strip))
        else:
            assert not changed.any()


def test_photometric_jitter_changes_only_colours(room):
    t = DepthTransform(crop=None, cutdepth_every=0, flip_p=0.0, photometric_p=1.0, seed=5)
    out = t(room)
    assert out["image"].min() >= 0 and out["image"].max() <= 1
    assert not torch.equal(out["image"], torch.from_numpy(room["image"]).permute(2, 0, 1).float() / 255)
    assert torch.equal(out["depth"][0], torch.from_numpy(room["depth"]))


def test_transforms_deterministic_under_seed(room):
    for make in (
        lambda s: DepthTransform(crop=(32, 32), seed=s),
        lambda s: InstanceTransform(canvas=64, seed=s),
    ):
        a, b, c = make(9), make(9), make(10)
        outs_a = [a(room) for _ in range(4)]
        outs_b = [b(room) for _ in range(4)]
        outs_c = [c(room) for _ in range(4)]
        for x, y in zip(outs_a, outs_b):
            assert torch.equal(x["image"], y["image"])
        assert any(not torch.equal(x["image"], z["image"]) for x, z in zip(outs_a, outs_c))


def test_depth_transform_errors(room):
    with pytest.raises(ValueError, match="larger than the image"):
        DepthTransform(crop=(128, 128), seed=0)(room)
    with pytest.raises(ValueError, match="crop must be"):
        DepthTransform(crop=(0, 5))
    with pytest.raises(ValueError, match="'depth'"):
        DepthTransform()({"image": room["image"]})
    with pytest.raises(ValueError, match=r"\(H, W\) = \(64, 96\)"):
        DepthTransform(train=False)({"image": room["image"], "depth": np.zeros((10, 10), np.float32)})


def test_instance_transform_train_keeps_boxes_on_masks():
    rooms = SyntheticRooms(length=6, height=64, width=96, seed=2)
    t = InstanceTransform(canvas=80, seed=1)
    for i in range(6):
        out = t(rooms[i])
        n = len(out["labels"])
        assert out["image"].shape == (3, 80, 80) and out["image"].dtype == torch.float32
        assert out["boxes"].shape == (n, 4) and out["masks"].shape == (n, 80, 80)
        assert out["masks"].dtype == torch.uint8 and out["orig_size"] == (64, 96)
        # the real image area: the resized (and cropped) image, top-left; zero padding beyond it
        h, w = out["image_size"]
        assert (h, w) == (min(80, round(64 * out["scale"])), min(80, round(96 * out["scale"])))
        assert (out["image"][:, h:] == 0).all() and (out["image"][:, :, w:] == 0).all()
        tolerance = out["scale"] + 1  # nearest-neighbour mask vs exact box scaling
        for box, mask in zip(out["boxes"], out["masks"]):
            assert mask.any()
            assert (box[2:] - box[:2] >= 0.01).all()
            x1, y1, x2, y2 = extent(mask.bool())
            assert box[0] - tolerance <= x1 and x2 <= box[2] + tolerance
            assert box[1] - tolerance <= y1 and y2 <= box[3] + tolerance
        assert set(out["labels"].tolist()) <= set(rooms[i]["labels"].tolist())


def test_instance_transform_drops_cropped_away_objects():
    image = np.zeros((40, 40, 3), np.uint8)
    masks = np.zeros((3, 40, 40), bool)
    masks[0, 0:4, 0:4] = True  # top-left corner
    masks[1, 36:40, 36:40] = True  # bottom-right corner
    boxes = np.array([[0, 0, 4, 4], [36, 36, 40, 40], [10, 10, 10, 20]], np.float32)  # last: zero width
    iscrowd = np.array([False, True, False])
    sample = {
        "image": image,
        "boxes": boxes,
        "labels": np.array([0, 1, 2]),
        "masks": masks,
        "iscrowd": iscrowd,
    }
    # x2 scale -> 80x80, cropped to 40x40: at most one corner survives, the zero-width box never does
    t = InstanceTransform(canvas=40, scale_range=(2.0, 2.0), flip_p=0.0, seed=0)
    seen = set()
    for _ in range(20):
        out = t(sample)
        assert len(out["labels"]) <= 1 and 2 not in out["labels"].tolist()
        assert len(out["boxes"]) == len(out["masks"]) == len(out["labels"]) == len(out["iscrowd"])
        assert out["iscrowd"].tolist() == [label == 1 for label in out["labels"].tolist()]
        seen.update(out["labels"].tolist())
    assert seen == {0, 1}


def test_instance_transform_test_mode_resizes_and_pads(room):
    t = InstanceTransform(train=False, canvas=128)
    out = t(room)
    assert out["scale"] == pytest.approx(128 / 96)
    new_h = round(64 * 128 / 96)  # 85: the image is resized to whole pixels, boxes follow it per axis
    per_axis = torch.tensor([128 / 96, new_h / 64, 128 / 96, new_h / 64])
    assert torch.allclose(out["boxes"], torch.from_numpy(room["boxes"]) * per_axis)
    assert torch.allclose(out["boxes"] / out["scale"], torch.from_numpy(room["boxes"]), atol=0.5)
    assert (out["image"][:, new_h:] == 0).all() and (out["masks"][:, new_h:] == 0).all()
    # normalisation with the COCO mean/std on a uniform image
    grey = {"image": np.full((10, 20, 3), 100, np.uint8), "boxes": np.zeros((0, 4)), "labels": np.zeros(0)}
    out = InstanceTransform(train=False, canvas=20)(grey)
    expected = (100 - torch.tensor(COCO_MEAN)) / torch.tensor(COCO_STD)
    assert torch.allclose(out["image"][:, :10, :].mean(dim=(1, 2)), expected, atol=1e-5)
    assert out["masks"].shape == (0, 20, 20) if "masks" in out else out["boxes"].shape == (0, 4)


def test_collate_batches_variable_instances(room):
    rooms = SyntheticRooms(length=3, height=64, width=64, seed=8)
    t = InstanceTransform(canvas=64, seed=0)
    batch = collate([t(rooms[i]) for i in range(3)])
    assert batch["image"].shape == (3, 3, 64, 64)
    assert isinstance(batch["boxes"], list) and len(batch["boxes"]) == 3
    assert [len(m) for m in batch["masks"]] == [len(b) for b in batch["boxes"]]
    assert batch["orig_size"].tolist() == [[64, 64]] * 3 and batch["scale"].shape == (3,)
    assert batch["image_id"].tolist() == [0, 1, 2]

    depth_batch = collate([DepthTransform(train=False)(rooms[i]) for i in range(2)])
    assert depth_batch["depth"].shape == (2, 1, 64, 64)
    # numpy samples straight from a reader work too (variable instances stay lists)
    raw = collate([rooms[0], rooms[1]])
    assert raw["image"].shape == (2, 64, 64, 3) and isinstance(raw["masks"], list)
    with pytest.raises(ValueError, match="shapes differ"):
        collate([DepthTransform(train=False)(room), DepthTransform(train=False)(rooms[0])])
    with pytest.raises(ValueError, match="at least one"):
        collate([])


def test_dataloader_workers_draw_different_augmentations():
    from torch.utils.data import DataLoader

    from ait_data import TransformDataset

    rooms = SyntheticRooms(length=4, height=64, width=64, seed=1)
    # the same image four times, so only the augmentation can differ
    same = [rooms[0]] * 4
    data = TransformDataset(same, DepthTransform(crop=(32, 32), cutdepth_every=0, seed=5))
    loader = DataLoader(data, batch_size=1, num_workers=2, collate_fn=collate)
    first = [b["image"] for b in loader]
    again = [b["image"] for b in loader]
    assert all(torch.equal(x, y) for x, y in zip(first, again))  # reproducible under the seed
    # worker 0 serves samples 0 and 2, worker 1 samples 1 and 3: their first draws must differ
    assert not torch.equal(first[0], first[1])
    batch = next(
        iter(
            DataLoader(TransformDataset(rooms, DepthTransform(train=False)), batch_size=4, collate_fn=collate)
        )
    )
    assert batch["image"].shape == (4, 3, 64, 64) and batch["depth"].shape == (4, 1, 64, 64)


# ---------------------------------------------------------------------------------------------------------
# Photometric depth augmentation in the original's forms (GLPDepth/AiT's albumentations defaults):
# RandomBrightnessContrast x * alpha + beta (alpha = 1 + U(-0.2, 0.2), beta = U(-0.2, 0.2) of the full
# range), RandomGamma x ** U(0.8, 1.2), HueSaturationValue: additive shifts in OpenCV's HSV of hue
# U(-20, 20) / 180 of the circle, saturation U(-30, 30) / 255, value U(-20, 20) / 255; p 0.5 each.


def _hsv_reference(image: np.ndarray, hue: float, sat: float, val: float) -> np.ndarray:
    """float64 restatement with the standard library's colorsys, pixel by pixel (image (3, H, W) in [0, 1])."""
    import colorsys

    out = np.empty_like(image)
    for i in range(image.shape[1]):
        for j in range(image.shape[2]):
            h, s, v = colorsys.rgb_to_hsv(*image[:, i, j])
            h = (h + hue) % 1.0
            s = min(max(s + sat, 0.0), 1.0)
            v = min(max(v + val, 0.0), 1.0)
            out[:, i, j] = colorsys.hsv_to_rgb(h, s, v)
    return out


def test_brightness_contrast_is_the_originals_scale_and_shift():
    from ait_data.transforms import brightness_contrast

    image = torch.rand(3, 5, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    image[:, 0, 0] = 0.0  # black: only an additive brightness moves it
    out = brightness_contrast(image, alpha=1.15, beta=0.1)
    torch.testing.assert_close(out, (image * 1.15 + 0.1).clamp(0, 1), rtol=0, atol=1e-12)
    assert out[:, 0, 0].tolist() == pytest.approx([0.1] * 3)


def test_hsv_shift_is_additive_in_hue_saturation_and_value():
    from ait_data.transforms import shift_hsv

    image = torch.rand(3, 6, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    image[:, 0, 0] = 0.5  # grey: an additive saturation shift gives it colour (hue 0, red)
    image[:, 0, 1] = 0.0  # black
    for hue, sat, val in ((0.1, 0.08, -0.05), (-0.07, -0.1, 0.06), (0.0, 0.0, 0.0)):
        out = shift_hsv(image, hue, sat, val)
        torch.testing.assert_close(
            out, torch.from_numpy(_hsv_reference(image.numpy(), hue, sat, val)), rtol=0, atol=1e-9
        )
    grey = shift_hsv(image, 0.0, 30 / 255, 0.0)[:, 0, 0]
    assert grey[0] > grey[1] == pytest.approx(grey[2])


def test_depth_photometric_draws_the_originals_ranges(room, monkeypatch):
    import ait_data.transforms as transforms

    seen = {}
    monkeypatch.setattr(
        transforms, "brightness_contrast", lambda x, alpha, beta: seen.update(a=alpha, b=beta) or x
    )
    monkeypatch.setattr(transforms, "shift_hsv", lambda x, h, s, v: seen.update(h=h, s=s, v=v) or x)
    draws = []
    t = DepthTransform(crop=None, cutdepth_every=0, flip_p=0.0, photometric_p=1.0, seed=5)
    for _ in range(200):
        seen.clear()
        t(room)
        draws.append(dict(seen))
    for key, low, high in (
        ("a", 0.8, 1.2),
        ("b", -0.2, 0.2),
        ("h", -20 / 180, 20 / 180),
        ("s", -30 / 255, 30 / 255),
        ("v", -20 / 255, 20 / 255),
    ):
        values = np.array([d[key] for d in draws])
        assert values.min() >= low and values.max() <= high, key
        assert values.min() < low + 0.1 * (high - low) and values.max() > high - 0.1 * (high - low), key
