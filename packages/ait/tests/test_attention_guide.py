"""Guided cross-attention (loss.attention_guide_weight): targets, the loss against a float64 reference, and
its place in the solver's training step."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ait.model.attention_guide import (
    attention_guide_loss,
    captured_cross_attention,
    object_cells,
    position_targets,
)
from ait_decoder.testing import random_features, tiny_decoder, tiny_vocab


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), objects=st.integers(0, 4), stride=st.sampled_from([2, 4, 8]))
def test_an_object_owns_exactly_the_cells_its_pixels_fall_in(seed, objects, stride):
    gen = torch.Generator().manual_seed(seed)
    size = 3 * stride + stride // 2  # a partial last row and column of cells
    masks = (torch.rand(objects, size, size, generator=gen) < 0.05).to(torch.uint8)
    cells = object_cells(masks, (4, 4), stride).view(objects, 4, 4)
    for index in range(objects):
        expected = torch.zeros(4, 4, dtype=torch.bool)
        for y, x in masks[index].nonzero().tolist():
            expected[y // stride, x // stride] = True
        assert torch.equal(cells[index], expected)


def test_a_one_pixel_object_still_owns_a_cell():
    masks = torch.zeros(1, 16, 16, dtype=torch.uint8)
    masks[0, 13, 2] = 1
    cells = object_cells(masks, (4, 4), 4).view(4, 4)
    assert cells.sum() == 1 and cells[3, 0]


def test_each_position_of_a_real_slot_targets_its_objects_cells():
    cells = [
        torch.tensor([[1, 0, 0], [0, 1, 1]], dtype=torch.bool),
        torch.tensor([[0, 0, 1]], dtype=torch.bool),
    ]
    slot_objects = torch.tensor([[1, -1, 0], [-1, 0, -1]])
    targets = position_targets(slot_objects, cells, per_object=2, length=6)
    assert targets.shape == (2, 6, 3)
    assert torch.equal(targets[0, 0], cells[0][1]) and torch.equal(targets[0, 1], cells[0][1])
    assert not targets[0, 2:4].any() and torch.equal(targets[0, 5], cells[0][0])
    assert not targets[1, :2].any() and torch.equal(targets[1, 3], cells[1][0]) and not targets[1, 4:].any()


def _reference(decoder, memory_tokens, inputs, targets):
    """Block by block in float64: softmax(q k^T / sqrt(d)) per head, mass on the targets, mean over heads."""
    total, guided = torch.zeros((), dtype=torch.float64), targets.any(-1)
    x = inputs + decoder.task_positions["insseg"][: inputs.shape[1]]
    for block in decoder.blocks:
        attn = block.cross_attn
        k, v = block.memory_kv(memory_tokens)
        x_self = x + block.self_attn(block.norm1(x), causal=True)
        queries = attn.q(block.norm2(x_self)).double()
        batch, length, _ = queries.shape
        q = queries.view(batch, length, attn.num_heads, -1).transpose(1, 2)
        weights = torch.softmax(q @ k.double().transpose(-1, -2) / math.sqrt(q.shape[-1]), -1)
        mass = (weights * targets[:, None].double()).sum(-1).mean(1)  # (B, T)
        total = total - torch.log(mass[guided]).sum()
        x = block(x, k, v)
    return total / len(decoder.blocks)


def test_the_loss_matches_a_float64_reference_and_pulls_attention_to_the_targets():
    decoder = tiny_decoder()  # eval: no dropout, so the reference sees the same activations
    memory = decoder.encode(random_features(2, grid=(3, 4)))
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(0, tiny_vocab().size, (2, 6), generator=gen)
    targets = torch.rand(2, 6, 12, generator=gen) < 0.3
    targets[1, 2] = False  # an unguided position
    with captured_cross_attention(decoder) as records:
        decoder(memory, ids, "insseg")
    assert len(records) == len(decoder.blocks)
    loss, count = attention_guide_loss(records, targets)
    assert count == int(targets.any(-1).sum())
    inputs = torch.cat((decoder.prompt("insseg", 2), decoder.token_embed(ids[:, :-1])), 1)
    reference = _reference(decoder, memory.tokens, inputs, targets)
    torch.testing.assert_close(loss.double(), reference, rtol=1e-5, atol=1e-5)
    # one gradient step on the loss alone raises the attention mass on the targets
    loss.backward()
    with torch.no_grad():
        for parameter in decoder.parameters():
            if parameter.grad is not None:
                parameter -= 0.5 * parameter.grad
    with torch.no_grad(), captured_cross_attention(decoder) as records:
        decoder(memory, ids, "insseg")
        after, _ = attention_guide_loss(records, targets)
    assert after < loss
    # the hooks are gone once the block ends
    assert all(not block.cross_attn._forward_hooks for block in decoder.blocks)


def test_nothing_guided_gives_zero_with_a_graph():
    decoder = tiny_decoder().train()
    memory = decoder.encode(random_features(1))
    with captured_cross_attention(decoder) as records:
        decoder(memory, torch.zeros(1, 4, dtype=torch.long), "insseg")
    loss, count = attention_guide_loss(records, torch.zeros(1, 4, 12, dtype=torch.bool))
    assert count == 0 and loss.item() == 0.0 and loss.requires_grad


def test_targets_of_the_wrong_shape_are_refused():
    decoder = tiny_decoder().train()
    memory = decoder.encode(random_features(1))
    with captured_cross_attention(decoder) as records:
        decoder(memory, torch.zeros(1, 4, dtype=torch.long), "insseg")
    with pytest.raises(ValueError, match="do not match"):
        attention_guide_loss(records, torch.ones(1, 4, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="no cross-attention was recorded"):
        attention_guide_loss([], torch.ones(1, 4, 12, dtype=torch.bool))
