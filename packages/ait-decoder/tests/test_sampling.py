import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ait_decoder import greedy, soft_embedding, top_p_filter, top_p_sample


def original_nucleus(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """The original release's per-row loop, as a reference: a bool mask of the kept tokens."""
    sorted_logits, sorted_idx = torch.sort(logits, descending=True)
    cumulative = torch.cumsum(torch.softmax(sorted_logits, dim=-1), dim=-1)
    remove = cumulative > top_p
    remove[..., 1:] = remove[..., :-1].clone()
    remove[..., 0] = False
    kept = torch.ones_like(logits, dtype=torch.bool)
    for row in range(logits.shape[0]):
        kept[row, sorted_idx[row][remove[row]]] = False
    return kept


def test_hand_worked_nucleus():
    probs = torch.tensor([[0.2, 0.5, 0.3]], dtype=torch.float64)
    kept, order = top_p_filter(probs, 0.3)
    assert order.tolist() == [[1, 2, 0]] and kept.tolist() == [[0.5, 0.0, 0.0]]  # mass before 0.3 > 0.3
    kept, _ = top_p_filter(probs, 0.6)
    assert kept.tolist() == [[0.5, 0.3, 0.0]]  # the token crossing 0.6 is kept, the next one is not


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    rows=st.integers(1, 5),
    width=st.integers(1, 40),
    top_p=st.floats(0.05, 1.0),
)
def test_vectorised_filter_matches_the_original_loop(seed, rows, width, top_p):
    logits = torch.randn(rows, width, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 3
    kept, order = top_p_filter(torch.softmax(logits, dim=-1), top_p)
    ours = torch.zeros_like(logits, dtype=torch.bool).scatter(1, order, kept > 0)
    assert torch.equal(ours, original_nucleus(logits, top_p))


def test_top_p_sampling_frequencies_and_seed():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05])).expand(20000, 4)
    samples = top_p_sample(logits, 0.6, torch.Generator().manual_seed(0))
    counts = torch.bincount(samples, minlength=4).double() / samples.numel()
    # nucleus {0, 1} renormalised: 0.625 / 0.375
    torch.testing.assert_close(
        counts, torch.tensor([0.625, 0.375, 0.0, 0.0], dtype=torch.float64), atol=0.015, rtol=0
    )
    again = top_p_sample(logits, 0.6, torch.Generator().manual_seed(0))
    assert torch.equal(samples, again)
    assert (top_p_sample(logits[:5], 1e-6, torch.Generator()) == 0).all()  # tiny top_p == greedy


def test_greedy_and_soft_embedding():
    logits = torch.tensor([[0.0, 2.0, 1.0]])
    assert greedy(logits).tolist() == [1]
    rows = torch.eye(3, dtype=torch.float64)
    mixed = soft_embedding(logits.double(), rows)
    torch.testing.assert_close(mixed, torch.softmax(logits.double(), -1))
    sharp = soft_embedding(logits.double(), rows, tau=100.0)
    assert sharp[0].argmax() == 1 and sharp[0, 1] > 0.99


@pytest.mark.parametrize("top_p", [0.0, -0.5, 1.5, float("nan")])
def test_nucleus_mass_out_of_range_is_a_value_error(top_p):
    probs = torch.full((2, 4), 0.25)
    with pytest.raises(ValueError, match="top_p must be in"):
        top_p_filter(probs, top_p)
    with pytest.raises(ValueError, match="top_p must be in"):
        top_p_sample(probs.log(), top_p)
