import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ait_decoder import VocabLayout
from ait_decoder.sequences import (
    DUPLICATE,
    NOISE,
    REAL,
    depth_to_sequence,
    dequantize_boxes,
    instances_to_sequence,
    pad_instances,
    parse_instances,
    quantize_boxes,
    sequence_to_depth,
)

PAPER = VocabLayout.paper(instance=True)
CANVAS = 640.0


def test_depth_round_trip_and_ids():
    codes = torch.randint(0, 128, (2, 15, 15), generator=torch.Generator().manual_seed(0))
    ids = depth_to_sequence(codes, PAPER)
    assert ids.shape == (2, 225) and ids.min() >= 2211 and ids.max() < 2339
    assert ids[0, 16].item() == codes[0, 1, 1].item() + 2211  # row-major
    assert torch.equal(sequence_to_depth(ids, PAPER, (15, 15)), codes)


def test_depth_bad_input():
    with pytest.raises(ValueError, match=r"codebook of 128"):
        depth_to_sequence(torch.full((1, 2, 2), 128), PAPER)
    with pytest.raises(ValueError, match=r"\[2211, 2339\)"):
        sequence_to_depth(torch.full((1, 4), 5), PAPER, (2, 2))
    with pytest.raises(ValueError, match=r"\(B, 4\)"):
        sequence_to_depth(torch.full((1, 5), 2211), PAPER, (2, 2))


def test_quantisation_hand_worked():
    boxes = torch.tensor([[0.0, 0.32, 320.0, 640.0], [-5.0, 0.15, 700.0, 1.0]])
    bins = quantize_boxes(boxes, CANVAS, 2000)
    assert bins.tolist() == [
        [0, 1, 1000, 2000],
        [0, 0, 2000, 3],
    ]  # 0.32·2000/640 = 1, 0.15 -> 0.47 -> 0, clamped ends
    torch.testing.assert_close(
        dequantize_boxes(bins[:1], CANVAS, 2000), torch.tensor([[0.0, 0.32, 320.0, 640.0]])
    )


@st.composite
def boxes_in_canvas(draw, canvas=CANVAS):
    n = draw(st.integers(1, 8))
    coords = st.floats(0, canvas, allow_nan=False)
    rows = []
    for _ in range(n):
        x1, x2 = sorted((draw(coords), draw(coords)))
        y1, y2 = sorted((draw(coords), draw(coords)))
        rows.append([x1, y1, x2, y2])
    return torch.tensor(rows, dtype=torch.float32)


@settings(max_examples=80, deadline=None)
@given(boxes=boxes_in_canvas(), num_bins=st.sampled_from([2000, 100, 7]))
def test_boxes_tokens_boxes_within_half_a_bin(boxes, num_bins):
    vocab = VocabLayout(num_bins=num_bins, reserved=128)
    n = boxes.shape[0]
    labels = torch.arange(n) % vocab.num_classes
    padded = pad_instances(
        boxes, labels, max_objects=n, canvas=CANVAS, generator=torch.Generator().manual_seed(0)
    )
    mask_codes = torch.zeros(n, 16, dtype=torch.long)
    _, target, _ = instances_to_sequence(padded, mask_codes, vocab, CANVAS, corrupt_class_p=None)
    parsed = parse_instances(target, None, vocab, CANVAS)
    half_bin = CANVAS / num_bins / 2
    recovered = parsed["boxes"][torch.argsort(padded.source)]
    # exactly half a bin on bin edges, plus float32 rounding at the coordinate's magnitude
    assert (recovered - boxes).abs().max() <= half_bin + 4 * CANVAS * torch.finfo(torch.float32).eps
    assert torch.equal(parsed["labels"][torch.argsort(padded.source)], labels)


def test_pad_instances_structure_and_determinism():
    boxes = torch.tensor([[10.0, 20.0, 110.0, 220.0], [300.0, 300.0, 400.0, 350.0], [0.0, 0.0, 640.0, 640.0]])
    labels = torch.tensor([3, 7, 1])
    padded = pad_instances(boxes, labels, 100, CANVAS, torch.Generator().manual_seed(0))
    again = pad_instances(boxes, labels, 100, CANVAS, torch.Generator().manual_seed(0))
    assert torch.equal(padded.boxes, again.boxes) and torch.equal(padded.kind, again.kind)
    assert padded.boxes.shape == (100, 4)
    assert padded.kind[:3].tolist() == [REAL] * 3 and (padded.kind[3:] != REAL).all()
    assert sorted(padded.source[:3].tolist()) == [0, 1, 2]  # the real objects, shuffled
    assert torch.equal(padded.labels[:3], labels[padded.source[:3]])
    duplicates = padded.kind == DUPLICATE
    assert (padded.source[duplicates] >= 0).all() and torch.equal(
        padded.labels[duplicates], labels[padded.source[duplicates]]
    )
    assert (padded.source[padded.kind == NOISE] == -1).all() and (
        padded.labels[padded.kind == NOISE] == -1
    ).all()
    assert padded.boxes.min() >= 0 and padded.boxes.max() <= CANVAS
    assert (padded.boxes[:, 2] >= padded.boxes[:, 0]).all() and (
        padded.boxes[:, 3] >= padded.boxes[:, 1]
    ).all()
    # duplicates stay near their source: corners move by at most 2·0.1/2 of the size
    source_boxes = boxes[padded.source[duplicates]]
    size = (source_boxes[:, 2:] - source_boxes[:, :2]).repeat(1, 2)
    assert ((padded.boxes[duplicates] - source_boxes).abs() <= size * 0.1 + 1e-4).all()


@st.composite
def image_with_boxes(draw):
    """A real image area (h, w) inside the 640 canvas (before its padding) and boxes inside that area."""
    height = draw(st.floats(8.0, CANVAS, allow_nan=False))
    width = draw(st.floats(8.0, CANVAS, allow_nan=False))
    n = draw(st.integers(0, 6))
    rows = []
    for _ in range(n):
        x1, x2 = sorted((draw(st.floats(0, width)), draw(st.floats(0, width))))
        y1, y2 = sorted((draw(st.floats(0, height)), draw(st.floats(0, height))))
        rows.append([x1, y1, x2, y2])
    return (height, width), torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)


@settings(max_examples=60, deadline=None)
@given(case=image_with_boxes(), seed=st.integers(0, 2**31 - 1))
def test_padding_boxes_stay_inside_the_real_image_area(case, seed):
    (height, width), boxes = case
    labels = torch.zeros(boxes.shape[0], dtype=torch.long)
    padded = pad_instances(
        boxes, labels, 30, CANVAS, torch.Generator().manual_seed(seed), image_size=(height, width)
    )
    pad = padded.boxes[padded.kind != REAL]
    assert pad.shape[0] == 30 - boxes.shape[0]
    assert (pad >= 0).all()
    assert (pad[:, 0::2] <= width).all() and (pad[:, 1::2] <= height).all()
    assert (pad[:, 2] >= pad[:, 0]).all() and (pad[:, 3] >= pad[:, 1]).all()


def test_noise_boxes_are_centred_over_the_image_with_sizes_from_its_width_and_height():
    # a wide, short image in the top-left of the canvas: noise boxes spread over its width only, and random
    # boxes scale with w horizontally and h vertically (median half-size |N(0,1)|/4 ~ 0.17 of the side)
    generator = torch.Generator().manual_seed(0)
    padded = [
        pad_instances(
            torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), 100, CANVAS, generator, (40.0, 600.0)
        )
        for _ in range(20)
    ]
    noise = torch.cat([p.boxes for p in padded])
    centre = (noise[:, :2] + noise[:, 2:]) / 2
    assert centre[:, 0].max() > 450 and centre[:, 1].max() <= 40
    size = noise[:, 2:] - noise[:, :2]
    assert 40 < size[:, 0].median() < 200 and size[:, 1].median() < 20
    with pytest.raises(ValueError, match="image_size"):
        pad_instances(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), 4, CANVAS, None, (700.0, 10.0))


def test_duplicate_sources_are_drawn_without_replacement_from_the_tiled_objects():
    # the original: box_tiled = box.repeat(free // n + 1); duplicates take distinct rows of it
    boxes, labels = (
        torch.tensor([[10.0, 10.0, 50.0, 50.0], [100.0, 100.0, 200.0, 150.0]]),
        torch.tensor([0, 1]),
    )
    generator = torch.Generator().manual_seed(0)
    for _ in range(200):
        padded = pad_instances(
            boxes, labels, 10, CANVAS, generator
        )  # 8 free slots: each object tiled 5 times
        sources = padded.source[padded.kind == DUPLICATE]
        assert torch.bincount(sources, minlength=2).max() <= 5


def test_duplicate_count_is_uniform_over_free_slots():
    boxes, labels = torch.tensor([[10.0, 10.0, 50.0, 50.0]]), torch.tensor([0])
    generator = torch.Generator().manual_seed(0)
    counts = [
        int((pad_instances(boxes, labels, 5, CANVAS, generator).kind == DUPLICATE).sum()) for _ in range(600)
    ]
    histogram = torch.bincount(torch.tensor(counts), minlength=5).double() / 600
    torch.testing.assert_close(histogram, torch.full((5,), 0.2, dtype=torch.float64), atol=0.06, rtol=0)
    empty = pad_instances(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), 4, CANVAS, generator)
    assert (empty.kind == NOISE).all()  # nothing to duplicate


def test_boxes_outside_the_canvas_are_clipped_and_bad_boxes_rejected():
    padded = pad_instances(torch.tensor([[-30.0, 600.0, 700.0, 900.0]]), torch.tensor([2]), 1, CANVAS)
    assert padded.boxes.tolist() == [[0.0, 600.0, 640.0, 640.0]]
    with pytest.raises(ValueError, match="max_objects=2"):
        pad_instances(torch.zeros(3, 4), torch.zeros(3, dtype=torch.long), 2, CANVAS)
    with pytest.raises(ValueError, match="x2 >= x1"):
        pad_instances(torch.tensor([[5.0, 0.0, 1.0, 1.0]]), torch.tensor([0]), 2, CANVAS)
    with pytest.raises(ValueError, match="finite"):
        pad_instances(torch.tensor([[0.0, 0.0, float("nan"), 1.0]]), torch.tensor([0]), 2, CANVAS)
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        pad_instances(torch.zeros(2, 5), torch.zeros(2, dtype=torch.long), 2, CANVAS)


def _padded_example(max_objects=6):
    boxes = torch.tensor([[10.0, 20.0, 110.0, 220.0], [300.0, 300.0, 400.0, 350.0]])
    return pad_instances(boxes, torch.tensor([3, 7]), max_objects, CANVAS, torch.Generator().manual_seed(3))


def test_instance_sequence_targets_and_weights():
    padded = _padded_example()
    mask_codes = torch.arange(6 * 16).view(6, 16) % 128
    inputs, target, weights = instances_to_sequence(
        padded, mask_codes, PAPER, CANVAS, torch.Generator().manual_seed(0)
    )
    assert inputs.shape == target.shape == weights.shape == (6 * 21,)
    objects, w = target.view(6, 21), weights.view(6, 21)
    for row in range(6):
        real = padded.kind[row] == REAL
        expected_class = 2001 + int(padded.labels[row]) if real else PAPER.noise_id
        assert objects[row, 4] == expected_class
        assert torch.equal(objects[row, 5:], mask_codes[row] + 2083)
        assert torch.equal(objects[row, :4], quantize_boxes(padded.boxes[row], CANVAS, 2000))
        expected = [1.0] * 4 + [1.0] + [0.2] * 16 if real else [0.0] * 4 + [1.0] + [0.0] * 16
        torch.testing.assert_close(w[row], torch.tensor(expected))
    # inputs: the targets with every class token replaced by a random class or noise
    differs = inputs != target
    assert not differs.view(6, 21)[:, [0, 1, 2, 3, *range(5, 21)]].any()
    corrupted = inputs.view(6, 21)[:, 4]
    assert (((corrupted >= 2001) & (corrupted < 2081)) | (corrupted == PAPER.noise_id)).all()

    _, _, dup_weights = instances_to_sequence(
        padded, mask_codes, PAPER, CANVAS, supervise_duplicate_masks=True, corrupt_class_p=None
    )
    dup_rows = padded.kind == DUPLICATE
    assert dup_rows.any()
    assert (dup_weights.view(6, 21)[dup_rows, 5:] == 0.2).all() and (
        dup_weights.view(6, 21)[dup_rows, :4] == 0
    ).all()


def test_class_corruption_probability():
    padded = pad_instances(
        torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), 400, CANVAS, torch.Generator()
    )
    codes = torch.zeros(400, 16, dtype=torch.long)
    inputs, _, _ = instances_to_sequence(padded, codes, PAPER, CANVAS, torch.Generator().manual_seed(0), 0.5)
    classes = inputs.view(400, 21)[:, 4]
    random_share = ((classes >= 2001) & (classes < 2081)).double().mean().item()
    assert abs(random_share - 0.5) < 0.08
    all_random, _, _ = instances_to_sequence(padded, codes, PAPER, CANVAS, torch.Generator(), 1.0)
    assert ((all_random.view(400, 21)[:, 4] >= 2001) & (all_random.view(400, 21)[:, 4] < 2081)).all()
    all_noise, _, _ = instances_to_sequence(padded, codes, PAPER, CANVAS, torch.Generator(), 0.0)
    assert (all_noise.view(400, 21)[:, 4] == PAPER.noise_id).all()


def test_detection_sequence_has_five_tokens_per_object():
    padded = _padded_example(4)
    inputs, target, _ = instances_to_sequence(padded, None, PAPER, CANVAS, corrupt_class_p=None)
    assert target.shape == (20,) and torch.equal(inputs, target)
    parsed = parse_instances(target, None, PAPER, CANVAS, task="det")
    assert parsed["boxes"].shape == (4, 4) and "mask_codes" not in parsed
    real = padded.kind == REAL
    assert torch.equal(parsed["labels"][real], padded.labels[real]) and (parsed["labels"][~real] == -1).all()
    assert torch.equal(parsed["scores"], real.float())  # padding objects parse as noise: label -1, score 0


def test_parse_scores_hand_worked():
    vocab = VocabLayout(num_bins=10, num_classes=2, mask_codes=2, depth_codes=0, tokens_per_mask=1)
    # one object: bins (1, 2, 5, 10), class 1, mask code 1 — length 6
    ids = torch.tensor([1, 2, 5, 10, vocab.classes[0] + 1, vocab.mask_codes[0] + 1])
    logits = torch.zeros(6, vocab.size)
    logits[4, vocab.classes[0] : vocab.classes[1]] = torch.tensor([0.0, 1.0])
    logits[4, vocab.noise_id] = 2.0
    logits[4, vocab.special_id] = 50.0  # ignored: only the classes and the noise logit count
    parsed = parse_instances(ids, logits, vocab, canvas=100.0)
    torch.testing.assert_close(parsed["boxes"], torch.tensor([[10.0, 20.0, 50.0, 100.0]]))
    assert parsed["labels"].tolist() == [1] and parsed["mask_codes"].tolist() == [[1]]
    e = torch.tensor([0.0, 1.0, 2.0]).exp()
    torch.testing.assert_close(
        parsed["scores"], (e[1] / e.sum()).view(1)
    )  # noise in the softmax, not renormalised


def test_parse_bad_input():
    vocab = PAPER
    good = torch.cat([torch.tensor([1, 2, 3, 4, 2001]), torch.full((16,), 2083)])
    with pytest.raises(ValueError, match="multiple"):
        parse_instances(good[:-1], None, vocab, CANVAS)
    with pytest.raises(ValueError, match=r"\[0, 2467\)"):
        parse_instances(torch.cat([good[:-1], torch.tensor([5000])]), None, vocab, CANVAS)
    bad = good.clone()
    bad[4] = vocab.special_id
    with pytest.raises(ValueError, match=r"position 4 .* \[2001, 2081\)"):
        parse_instances(bad, None, vocab, CANVAS)
    with pytest.raises(ValueError, match=r"logits must be \(21, 2467\)"):
        parse_instances(good, torch.zeros(21, 10), vocab, CANVAS)


def test_instances_to_sequence_bad_input():
    padded = _padded_example()
    with pytest.raises(ValueError, match=r"mask_codes must be \(6, 16\)"):
        instances_to_sequence(padded, torch.zeros(6, 15, dtype=torch.long), PAPER, CANVAS)
    with pytest.raises(ValueError, match="codebook of 128"):
        instances_to_sequence(padded, torch.full((6, 16), 128), PAPER, CANVAS)
    with pytest.raises(ValueError, match=r"real labels must lie in \[0, 5\)"):
        instances_to_sequence(padded, None, VocabLayout(num_classes=5), CANVAS)


def test_generated_sequence_parses(tiny_decoder, tiny_vocab):
    """End to end on the tiny decoder: restricted top-p decoding always yields a parseable sequence."""
    from ait_decoder.testing import random_features

    memory = tiny_decoder.encode(random_features(2))
    out = tiny_decoder.generate(
        memory,
        "insseg",
        27,
        allowed=tiny_vocab.allowed_ranges("insseg", 27),
        strategy="top_p",
        generator=torch.Generator().manual_seed(0),
    )
    parsed = parse_instances(out.ids[1], out.logits[1], tiny_vocab, canvas=64.0)
    assert parsed["boxes"].shape == (3, 4) and parsed["mask_codes"].shape == (3, 4)
    assert ((parsed["scores"] > 0) & (parsed["scores"] < 1)).all()


def test_batched_parse_equals_per_sequence_parse_and_orders_corners(tiny_decoder, tiny_vocab):
    from ait_decoder.testing import random_features

    memory = tiny_decoder.encode(random_features(2))
    out = tiny_decoder.generate(
        memory,
        "insseg",
        27,
        allowed=tiny_vocab.allowed_ranges("insseg", 27),
        strategy="top_p",
        top_p=1.0,
        generator=torch.Generator().manual_seed(3),
    )
    batched = parse_instances(out.ids, out.logits, tiny_vocab, canvas=64.0)
    for b in range(2):
        one = parse_instances(out.ids[b], out.logits[b], tiny_vocab, canvas=64.0)
        for key, value in one.items():
            torch.testing.assert_close(batched[key][b], value)
    boxes = batched["boxes"]
    assert (boxes[..., 2] >= boxes[..., 0]).all() and (boxes[..., 3] >= boxes[..., 1]).all()
    # a swapped sample (x2 < x1) parses to the ordered box
    vocab = VocabLayout(num_bins=10, num_classes=2, mask_codes=2, depth_codes=0, tokens_per_mask=1)
    ids = torch.tensor([5, 2, 1, 10, vocab.classes[0], vocab.mask_codes[0]])
    torch.testing.assert_close(
        parse_instances(ids, None, vocab, canvas=100.0)["boxes"], torch.tensor([[10.0, 20.0, 50.0, 100.0]])
    )
    with pytest.raises(ValueError, match=r"sequence 1, position 4"):
        bad = torch.stack([ids, ids])
        bad[1, 4] = vocab.special_id
        parse_instances(bad, None, vocab, canvas=100.0)


# ------------------------------------------------------------------------------------ object order
@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(0, 2**31 - 1), st.sampled_from(["area", "raster"]))
def test_fixed_object_orders_sort_the_real_objects(count, seed, order):
    generator = torch.Generator().manual_seed(seed)
    corner = torch.rand(count, 2, generator=generator) * 48
    size = torch.rand(count, 2, generator=generator) * 16 + 1
    boxes = torch.cat([corner, corner + size], dim=1)
    labels = torch.arange(count)
    padded = pad_instances(boxes, labels, 8, 64.0, torch.Generator().manual_seed(seed), order=order)
    real = padded.boxes[:count]
    assert sorted(padded.labels[:count].tolist()) == list(range(count))  # every object once
    assert torch.equal(padded.source[:count], padded.labels[:count])  # source = input index
    if order == "area":
        area = (real[:, 2] - real[:, 0]) * (real[:, 3] - real[:, 1])
        assert (area[:-1] >= area[1:]).all()
    else:
        row = torch.div(real[:, 1], 8, rounding_mode="floor")
        key = row * 1000 + real[:, 0]
        assert (key[:-1] <= key[1:]).all()
    # the order does not depend on the random stream: another generator gives the same real objects
    again = pad_instances(boxes, labels, 8, 64.0, torch.Generator().manual_seed(seed + 1), order=order)
    assert torch.equal(again.labels[:count], padded.labels[:count])


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 7), st.integers(0, 2**31 - 1))
def test_no_duplicates_fills_every_free_slot_with_a_bad_box(count, seed):
    generator = torch.Generator().manual_seed(seed)
    corner = torch.rand(count, 2, generator=generator) * 48
    boxes = torch.cat([corner, corner + torch.rand(count, 2, generator=generator) * 16 + 1], dim=1)
    labels = torch.arange(count)
    padded = pad_instances(boxes, labels, 8, 64.0, torch.Generator().manual_seed(seed), duplicates="none")
    assert (padded.kind[:count] == REAL).all()
    assert (padded.kind[count:] == NOISE).all()  # bad boxes only, however many slots are free
    assert (padded.source[count:] == -1).all() and (padded.labels[count:] == -1).all()
    # the real objects and their order are the same as with the original's padding
    uniform = pad_instances(boxes, labels, 8, 64.0, torch.Generator().manual_seed(seed), order="area")
    none = pad_instances(
        boxes, labels, 8, 64.0, torch.Generator().manual_seed(seed), order="area", duplicates="none"
    )
    assert torch.equal(uniform.boxes[:count], none.boxes[:count])


def test_unknown_duplicate_mode_is_refused():
    with pytest.raises(ValueError, match="duplicates must be one of"):
        pad_instances(torch.tensor([[0.0, 0.0, 4.0, 4.0]]), torch.tensor([0]), 2, 64.0, duplicates="some")


def test_unknown_object_order_is_refused():
    with pytest.raises(ValueError, match="order must be one of"):
        pad_instances(torch.tensor([[0.0, 0.0, 4.0, 4.0]]), torch.tensor([0]), 2, 64.0, order="size")
