"""The dense auxiliary loss on the image memory (loss.memory_box_weight)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ait.model.memory_boxes import MemoryBoxHead, box_masks, cell_owners
from ait_decoder import VocabLayout
from ait_decoder.testing import tiny_decoder


def test_each_cell_belongs_to_the_smallest_object_over_its_centre():
    masks = torch.zeros(2, 16, 16, dtype=torch.uint8)
    masks[0, 0:12, 0:12] = 1  # a large object over cells (0..2, 0..2) of a 4x4 grid of stride 4
    masks[1, 4:8, 4:8] = 1  # a small one in front of it, over cell (1, 1)
    owners = cell_owners(masks, (4, 4), 4).view(4, 4)
    expected = torch.full((4, 4), -1)
    expected[0:3, 0:3] = 0
    expected[1, 1] = 1
    assert torch.equal(owners, expected)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), objects=st.integers(0, 5), stride=st.sampled_from([2, 4, 8]))
def test_owners_cover_their_cells_centre_and_are_the_smallest_that_do(seed, objects, stride):
    gen = torch.Generator().manual_seed(seed)
    size = 4 * stride
    masks = (torch.rand(objects, size, size, generator=gen) < 0.4).to(torch.uint8)
    owners = cell_owners(masks, (4, 4), stride)
    area = masks.flatten(1).sum(1)
    for cell, owner in enumerate(owners.tolist()):
        cy, cx = int((cell // 4 + 0.5) * stride), int((cell % 4 + 0.5) * stride)
        covering = [i for i in range(objects) if masks[i, cy, cx]]
        if not covering:
            assert owner == -1
        else:
            assert owner in covering and area[owner] == min(area[i] for i in covering)


def test_cells_past_the_masks_have_no_owner():
    masks = torch.ones(1, 7, 16, dtype=torch.uint8)  # 7 rows: the centres of grid rows 0, 1 (pixels 2, 6)
    owners = cell_owners(masks, (4, 4), 4).view(4, 4)
    assert (owners[:2] == 0).all() and (owners[2:] == -1).all()


def test_box_masks_hold_the_pixels_whose_centres_are_inside():
    masks = box_masks(torch.tensor([[1.0, 2.0, 3.0, 5.5]]), 8)
    expected = torch.zeros(1, 8, 8, dtype=torch.bool)
    expected[0, 2:5, 1:3] = True  # rows 2, 3, 4 (centre 5.5 is not < 5.5), columns 1, 2
    assert torch.equal(masks, expected)


def _vocab() -> VocabLayout:
    """20 coordinate bins (one per pixel of the tests' 20 px canvas) and 5 classes."""
    return VocabLayout(num_bins=20, num_classes=5, mask_codes=8, depth_codes=8, reserved=3, tokens_per_mask=4)


def _reference_loss(head, memory, stride, batch, decoder, vocab, canvas):
    """Cell by cell, float64: the owner's four corner bins and class, CE through the tied output layer."""
    total, terms = torch.zeros((), dtype=torch.float64), 0
    batch_size, cells, dim = memory.shape
    side = math.isqrt(cells)
    for b in range(batch_size):
        masks = torch.as_tensor(batch["masks"][b])
        for cell in range(cells):
            cy, cx = int((cell // side + 0.5) * stride), int((cell % side + 0.5) * stride)
            covering = [i for i in range(masks.shape[0]) if masks[i, cy, cx]]
            if not covering:
                continue
            owner = min(covering, key=lambda i: int(masks[i].sum()))
            query = head.proj(memory[b, cell]).view(5, dim)
            box = batch["boxes"][b][owner]
            for role in range(4):
                logits = decoder.logits(query[role], vocab.coord).double()
                target = round(float(box[role]) / canvas * vocab.num_bins)
                total = total - logits.log_softmax(-1)[min(max(target, 0), vocab.num_bins)]
            logits = decoder.logits(query[4], vocab.classes).double()
            total = total - logits.log_softmax(-1)[int(batch["labels"][b][owner])]
            terms += 5
    return total, terms


def test_the_loss_is_the_per_cell_cross_entropy_and_reaches_memory_and_head():
    torch.manual_seed(0)
    vocab = _vocab()
    decoder = tiny_decoder(torch.float64).train()
    head = MemoryBoxHead(32).double()
    canvas, stride = 20, 5  # a 4x4 memory over a 20 px canvas, one bin per pixel
    masks = torch.zeros(2, 20, 20, dtype=torch.uint8)
    masks[0, 0:10, 0:15] = 1
    masks[1, 5:20, 10:20] = 1
    batch = {
        "boxes": [torch.tensor([[0.0, 0.0, 15.0, 10.0], [10.0, 5.0, 20.0, 20.0]]), torch.zeros(0, 4)],
        "labels": [torch.tensor([3, 1]), torch.zeros(0, dtype=torch.long)],
        "masks": [masks, torch.zeros(0, 20, 20, dtype=torch.uint8)],
    }
    memory = torch.randn(2, 16, 32, dtype=torch.float64, requires_grad=True)
    total, terms = head.loss(memory, (4, 4), stride, batch, decoder, vocab, canvas)
    expected, expected_terms = _reference_loss(head, memory, stride, batch, decoder, vocab, canvas)
    assert terms == expected_terms > 0
    torch.testing.assert_close(total, expected, rtol=1e-10, atol=1e-10)
    total.backward()
    assert memory.grad[0].abs().sum() > 0 and memory.grad[1].abs().sum() == 0  # no objects in image 1
    assert head.proj.weight.grad.abs().sum() > 0 and decoder.token_embed.weight.grad.abs().sum() > 0


def test_a_batch_without_objects_gives_zero_with_a_graph():
    decoder = tiny_decoder()
    vocab = _vocab()
    memory = torch.randn(1, 16, 32, requires_grad=True)
    batch = {"boxes": [torch.zeros(0, 4)], "labels": [torch.zeros(0, dtype=torch.long)]}  # det: no masks
    total, terms = MemoryBoxHead(32).loss(memory, (4, 4), 5, batch, decoder, vocab, 20)
    assert terms == 0 and total.item() == 0.0 and total.requires_grad


def test_a_memory_that_does_not_match_its_grid_is_refused():
    decoder = tiny_decoder()
    vocab = _vocab()
    with pytest.raises(ValueError, match="does not match its grid"):
        MemoryBoxHead(32).loss(
            torch.zeros(1, 15, 32), (4, 4), 5, {"boxes": [], "labels": []}, decoder, vocab, 20
        )


def test_the_rank_role_adds_each_cells_place_of_its_object_in_the_area_order():
    torch.manual_seed(0)
    vocab = _vocab()
    decoder = tiny_decoder(torch.float64).train()
    plain = MemoryBoxHead(32).double()
    ranked = MemoryBoxHead(32, rank_slots=2, rank_weight=0.5, order="area").double()
    ranked.proj.load_state_dict(plain.proj.state_dict())
    masks = torch.zeros(2, 20, 20, dtype=torch.uint8)
    masks[0, 0:10, 0:15] = 1  # 150 px, listed first, second in the sequence
    masks[1, 5:20, 8:20] = 1  # 180 px: the larger, so first in the sequence
    boxes = torch.tensor([[0.0, 0.0, 15.0, 10.0], [8.0, 5.0, 20.0, 20.0]])  # areas 150 and 180
    batch = {"boxes": [boxes], "labels": [torch.tensor([3, 1])], "masks": [masks]}
    memory = torch.randn(1, 16, 32, dtype=torch.float64, requires_grad=True)
    base, _ = plain.loss(memory, (4, 4), 5, batch, decoder, vocab, 20)
    total, _ = ranked.loss(memory, (4, 4), 5, batch, decoder, vocab, 20)
    owners = cell_owners(masks, (4, 4), 5)
    covered = (owners >= 0).nonzero()[:, 0]
    rank_of_object = torch.tensor([1, 0])  # the second object is larger: first in the sequence
    logits = ranked.rank(memory[0, covered]).log_softmax(-1)
    expected = base - 0.5 * logits.gather(1, rank_of_object[owners[covered]][:, None]).sum()
    torch.testing.assert_close(total, expected, rtol=1e-10, atol=1e-10)
    total.backward()
    assert ranked.rank.weight.grad.abs().sum() > 0


def test_a_rank_needs_a_fixed_order():
    with pytest.raises(ValueError, match="fixed object order"):
        MemoryBoxHead(32, rank_slots=4, rank_weight=1.0, order="random")
