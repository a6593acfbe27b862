import os

import pytest
import torch
import torch.multiprocessing as mp

from ait_tokenizer import EMAVectorQuantizer, utilisation
from ait_tokenizer.testing import ema_sync_worker, make_check_quantizer, run_quantizer_steps


def test_initial_state_is_the_originals():
    """Codebook N(0,1), cluster sizes 0, EMA sums N(0,1) drawn independently of the codebook."""
    torch.manual_seed(0)
    quantizer = EMAVectorQuantizer(64, 512)
    assert torch.equal(quantizer.ema_cluster_size, torch.zeros(512))
    assert not torch.equal(quantizer.ema_embed_sum, quantizer.embed)
    for buffer in (quantizer.embed, quantizer.ema_embed_sum):
        assert abs(buffer.mean().item()) < 0.02 and abs(buffer.std().item() - 1) < 0.02
    correlation = torch.corrcoef(torch.stack([quantizer.embed.flatten(), quantizer.ema_embed_sum.flatten()]))
    assert abs(correlation[0, 1].item()) < 0.02
    # The same draws in the same order as the original: embedding, then the EMA sums.
    torch.manual_seed(0)
    embedding = torch.empty(512, 64).normal_()
    ema_w = torch.empty(512, 64).normal_()
    assert torch.equal(quantizer.embed, embedding) and torch.equal(quantizer.ema_embed_sum, ema_w)


def test_ema_step_matches_hand_computation():
    quantizer = EMAVectorQuantizer(2, 2, decay=0.5, eps=1e-5, commitment_weight=0.25).double().train()
    quantizer.embed.copy_(torch.tensor([[0.0, 0.0], [10.0, 10.0]]))
    quantizer.ema_embed_sum.copy_(quantizer.embed)
    quantizer.ema_cluster_size.fill_(1.0)
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [9.0, 9.0]], dtype=torch.float64, requires_grad=True)

    quantized, indices, loss = quantizer(x)

    assert indices.tolist() == [0, 0, 1]
    # Quantized with the codebook *before* the update; commitment 0.25 * mean((x - q)^2) = 0.25 * 4 / 6.
    assert torch.equal(
        quantized.detach(), torch.tensor([[0.0, 0.0], [0.0, 0.0], [10.0, 10.0]], dtype=torch.float64)
    )
    assert loss.item() == pytest.approx(0.25 * 4 / 6, rel=1e-12)
    # counts: 0.5 * 1 + 0.5 * [2, 1] = [1.5, 1.0], then Laplace n_k' = (n_k + eps) / (n + K eps) * n with
    # n = 2.5, and (as in the original) the smoothed counts are the ones kept.
    smoothed = [(1.5 + 1e-5) / (2.5 + 2e-5) * 2.5, (1.0 + 1e-5) / (2.5 + 2e-5) * 2.5]
    assert quantizer.ema_cluster_size.tolist() == pytest.approx(smoothed, rel=1e-12)
    # sums: 0.5 * old + 0.5 * [[1, 1], [9, 9]].
    assert quantizer.ema_embed_sum.tolist() == [[0.5, 0.5], [9.5, 9.5]]
    expected = [[0.5 / smoothed[0]] * 2, [9.5 / smoothed[1]] * 2]
    assert quantizer.embed.tolist()[0] == pytest.approx(expected[0], rel=1e-12)
    assert quantizer.embed.tolist()[1] == pytest.approx(expected[1], rel=1e-12)


def test_straight_through_gradient_is_identity_and_commitment_pulls_to_code():
    quantizer = EMAVectorQuantizer(4, 8).double().eval()
    x = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(6, 4, dtype=torch.float64)
    quantized, _, _ = quantizer(x)
    (quantized * weights).sum().backward()
    assert torch.equal(x.grad, weights)

    x.grad = None
    quantized, _, loss = quantizer(x)
    loss.backward()
    expected = 0.25 * 2 * (x.detach() - quantized.detach()) / x.numel()
    assert torch.allclose(x.grad, expected, rtol=1e-12, atol=0)


def test_eval_mode_does_not_touch_the_codebook():
    quantizer = EMAVectorQuantizer(4, 8, kmeans_init=True).eval()
    before = {k: v.clone() for k, v in quantizer.named_buffers()}
    quantizer(torch.randn(10, 4))
    assert all(torch.equal(before[k], v) for k, v in quantizer.named_buffers())


def test_kmeans_init_uses_the_first_batch():
    torch.manual_seed(0)
    centres = torch.tensor([[5.0, 0.0], [-5.0, 0.0], [0.0, 5.0]])
    x = (centres[:, None, :] + 0.01 * torch.randn(3, 20, 2)).reshape(-1, 2)
    quantizer = EMAVectorQuantizer(2, 3, kmeans_init=True, kmeans_iters=10).train()
    quantizer(x)
    assert bool(quantizer.initialised)
    distances = torch.cdist(quantizer.embed, centres)
    assert (distances.min(dim=1).values < 0.1).all()  # each code sits on one cluster
    assert sorted(distances.argmin(dim=1).tolist()) == [0, 1, 2]  # and every cluster has a code


def test_dead_codes_restart_on_batch_vectors():
    torch.manual_seed(0)
    quantizer = EMAVectorQuantizer(2, 4, decay=0.5, dead_code_threshold=0.8).train()
    quantizer.embed.copy_(torch.tensor([[0.0, 0.0], [100.0, 100.0], [200.0, 200.0], [300.0, 300.0]]))
    quantizer.ema_embed_sum.copy_(quantizer.embed)
    x = torch.randn(16, 2) * 0.1  # everything goes to code 0; codes 1..3 decay to 0.5 < 0.8
    quantizer(x)
    assert quantizer.last_metrics["restarted_codes"] == 3.0
    for code in quantizer.embed[1:]:
        assert (x == code).all(dim=1).any()  # restarted on an actual batch vector
    assert quantizer.ema_cluster_size[1:].tolist() == pytest.approx([0.8] * 3)


def test_utilisation_metrics():
    assert utilisation(torch.tensor([5.0, 5.0, 0.0, 0.0])) == pytest.approx(
        {"perplexity": 2.0, "codes_used": 0.5}
    )
    uniform = utilisation(torch.ones(128))
    assert uniform["perplexity"] == pytest.approx(128.0)
    assert uniform["codes_used"] == 1.0


def test_wrong_dimension_is_rejected():
    with pytest.raises(ValueError, match="last dimension 4"):
        EMAVectorQuantizer(4, 8)(torch.randn(3, 5))


def test_two_gloo_processes_keep_one_codebook_equal_to_the_single_process_run(tmp_path):
    torch.manual_seed(3)
    batches = [torch.randn(8, 3, dtype=torch.float64) for _ in range(3)]
    options = {"kmeans_init": True, "dead_code_threshold": 0.9, "decay": 0.5}
    mp.spawn(ema_sync_worker, args=(2, str(tmp_path / "init"), batches, str(tmp_path), options), nprocs=2)
    rank0 = torch.load(tmp_path / "rank0.pt")
    rank1 = torch.load(tmp_path / "rank1.pt")
    single = run_quantizer_steps(make_check_quantizer(**options), batches)
    assert single["restarted_codes"] > 0  # the check covers restarts, not only the EMA
    for name in ("embed", "ema_cluster_size", "ema_embed_sum"):
        assert torch.equal(rank0[name], rank1[name]), name
        assert torch.allclose(rank0[name], single[name], rtol=1e-12, atol=1e-12), name
    assert not os.path.exists(tmp_path / "rank2.pt")
