"""The original release's VQ-VAE files: recognised by content, mapped key by key, same numbers (float64).

`OriginalVQVAE` below restates the original's module (``ait/code/model/vqvae.py``, ``vae/models/VQVAE.py``)
with its attribute names, so its ``state_dict`` keys are the original's: ``encoder.N``, ``decoder.N``
(``Conv2d(codebook_dim, dim, 1), ReLU()`` first), ``_vq_vae._embedding`` / ``_ema_cluster_size`` / ``_ema_w``.
Its encode / decode / decode_soft follow the original's formulas (distances, argmin, embedding lookup,
softmax(tau * logits) over the codebook axis, ``norm``/``denorm`` for masks).
"""

from __future__ import annotations

import math
import pickle

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from ait_tokenizer import create_tokenizer, load_tokenizer, save_tokenizer
from ait_tokenizer.original import (
    convert_original_vqvae,
    extract_original_vqvae,
    load_original_tokenizer,
    safe_torch_load,
)


class OriginalResBlock(nn.Module):
    def __init__(self, chan):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(chan, chan, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(chan, chan, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(chan, chan, 1),
        )

    def forward(self, x):
        return self.net(x) + x


class OriginalQuantizer(nn.Module):
    """Buffers of the original's EMA quantizer (names as in the release)."""

    def __init__(self, num_embeddings, embedding_dim):
        super().__init__()
        self.register_buffer("_embedding", torch.randn(num_embeddings, embedding_dim))
        self.register_buffer("_ema_cluster_size", torch.zeros(num_embeddings))
        self.register_buffer("_ema_w", torch.randn(num_embeddings, embedding_dim))

    def indices(self, latents):  # latents (B, D, h, w) -> (B, h, w), the original's distance and argmin
        flat = latents.permute(0, 2, 3, 1).reshape(-1, self._embedding.shape[1])
        distances = (
            flat.pow(2).sum(1, keepdim=True) + self._embedding.pow(2).sum(1) - 2 * flat @ self._embedding.t()
        )
        return distances.argmin(1).view(latents.shape[0], latents.shape[2], latents.shape[3])


class OriginalVQVAE(nn.Module):
    """The original VQVAE's layers: ``hidden_dim`` = the task config's value // (downsample / 2)."""

    def __init__(
        self, downsample_ratio, config_hidden_dim, num_embeddings=128, codebook_dim=512, use_norm=True
    ):
        super().__init__()
        self.use_norm = use_norm
        layer_num = int(math.log2(downsample_ratio) - 1)
        hidden_dim = config_hidden_dim // (downsample_ratio // 2)
        dim = hidden_dim
        enc = [nn.Conv2d(1, dim, 4, stride=2, padding=1), nn.ReLU()]
        for _ in range(layer_num):
            enc += [nn.Conv2d(dim, dim * 2, 4, stride=2, padding=1), nn.ReLU()]
            dim *= 2
        enc += [OriginalResBlock(dim), OriginalResBlock(dim), nn.Conv2d(dim, codebook_dim, 1)]
        dim = hidden_dim * downsample_ratio // 2
        dec = [nn.Conv2d(codebook_dim, dim, 1), nn.ReLU(), OriginalResBlock(dim), OriginalResBlock(dim)]
        dec += [nn.ConvTranspose2d(dim, dim, 4, stride=2, padding=1), nn.ReLU()]
        for _ in range(layer_num):
            dec += [nn.ConvTranspose2d(dim, dim // 2, 4, stride=2, padding=1), nn.ReLU()]
            dim //= 2
        dec.append(nn.Conv2d(dim, 1, 1))
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec)
        self._vq_vae = OriginalQuantizer(num_embeddings, codebook_dim)

    def norm(self, x):
        return 2.0 * (x - 0.5) if self.use_norm else x

    def denorm(self, y):
        return y * 0.5 + 0.5 if self.use_norm else y

    def encode(self, x):  # x (B, H, W)
        return self._vq_vae.indices(self.encoder(self.norm(x).unsqueeze(1)))

    def decode(self, ids):  # ids (B, h, w)
        embeds = self._vq_vae._embedding[ids].permute(0, 3, 1, 2)
        return self.denorm(self.decoder(embeds).squeeze(1))

    def decode_soft(self, logits, tau):  # logits (B, K, h, w), as the original's einsum
        soft = F.softmax(logits * tau, dim=1)
        embeds = torch.einsum("bnhw,nd->bdhw", soft, self._vq_vae._embedding)
        return self.denorm(self.decoder(embeds).squeeze(1))


def original_depth(seed=0):
    torch.manual_seed(seed)
    return OriginalVQVAE(downsample_ratio=32, config_hidden_dim=256, use_norm=False)


def original_mask(seed=0):
    torch.manual_seed(seed)
    return OriginalVQVAE(downsample_ratio=16, config_hidden_dim=128, use_norm=True)


def spread_codebook(model, x):
    """Codebook rows near encoder outputs of ``x``, so encode() picks many different codes (float32)."""
    with torch.no_grad():
        latents = model.encoder(model.norm(x).unsqueeze(1)).permute(0, 2, 3, 1).reshape(-1, 512)
        picks = latents[torch.randint(0, latents.shape[0], (128,))]
        model._vq_vae._embedding.copy_(picks + 0.05 * torch.randn_like(picks) * picks.std())
        model._vq_vae._ema_cluster_size.uniform_(0.1, 5.0)


def save_original(model, path, wrap="weights"):
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if wrap == "weights":
        content = {"weights": state}
    elif wrap == "weights+module":
        content = {"weights": {"module": state}}
    elif wrap == "prefix":
        content = {"weights": {f"module.{k}": v for k, v in state.items()}}
    else:
        content = state
    torch.save(content, path)
    return path


@pytest.mark.parametrize("wrap", ["weights", "weights+module", "prefix", "bare"])
def test_mask_tokenizer_matches_the_original_in_float64(tmp_path, wrap):
    reference = original_mask(seed=1)
    x = (torch.rand(6, 64, 64) > 0.5).float()
    spread_codebook(reference, x)
    path = save_original(reference, tmp_path / f"vqvae_insseg_{wrap}.pt", wrap)

    ours = load_tokenizer(path, expected_preset="mask-paper").double()
    reference = reference.double().eval()
    assert ours.preset == "mask-paper" and ours.kind == "mask"
    x = x.double()
    with torch.no_grad():
        ids_ref = reference.encode(x)
        ids = ours.encode(x[:, None])
        assert torch.equal(ids, ids_ref)
        assert ids.unique().numel() > 4  # the comparison sees many codes, not one
        # decode: the original's output; ours clamps masks to [0, 1] in its public decode
        torch.testing.assert_close(
            ours.decode(ids)[:, 0], reference.decode(ids).clamp(0, 1), rtol=0, atol=1e-10
        )
        # soft decode: the decoder of the soft mixture (unclamped, as the original's decode_soft)
        logits = torch.randn(6, 128, 4, 4, dtype=torch.float64)
        soft = ours._from_model(ours.decode_latents(ours.soft_embed(logits.permute(0, 2, 3, 1), tau=1.0)))
        torch.testing.assert_close(soft[:, 0], reference.decode_soft(logits, 1.0), rtol=0, atol=1e-10)


def test_depth_tokenizer_matches_the_original_in_float64(tmp_path):
    reference = original_depth(seed=2)
    depth = torch.rand(3, 64, 96) * 9 + 0.5  # fully convolutional: a small map keeps the test fast
    spread_codebook(reference, depth)
    path = save_original(reference, tmp_path / "vqvae_depth.pt")

    ours = load_tokenizer(path, expected_preset="depth-paper").double()
    reference = reference.double().eval()
    depth = depth.double()
    with torch.no_grad():
        ids = ours.encode(depth[:, None])
        assert torch.equal(ids, reference.encode(depth))
        assert ids.unique().numel() > 2
        torch.testing.assert_close(ours.decode(ids)[:, 0], reference.decode(ids), rtol=0, atol=1e-10)
        logits = torch.randn(3, 128, 2, 3, dtype=torch.float64) * 3
        soft = ours.decode_soft(logits.permute(0, 2, 3, 1), tau=0.8)
        torch.testing.assert_close(soft[:, 0], reference.decode_soft(logits, 0.8), rtol=0, atol=1e-10)


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**16), tau=st.floats(0.25, 2.0))
def test_soft_decode_matches_for_any_weights_and_tau(tmp_path_factory, seed, tau):
    reference = original_mask(seed=seed)
    path = save_original(reference, tmp_path_factory.mktemp("orig") / "vqvae_insseg.pt")
    ours = load_tokenizer(path).double()
    reference = reference.double().eval()
    logits = torch.randn(2, 128, 4, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 4
    with torch.no_grad():
        soft = ours._from_model(ours.decode_latents(ours.soft_embed(logits.permute(0, 2, 3, 1), tau=tau)))
        torch.testing.assert_close(soft[:, 0], reference.decode_soft(logits, tau), rtol=0, atol=1e-10)


@pytest.mark.parametrize(("make", "preset"), [(original_depth, "depth-paper"), (original_mask, "mask-paper")])
def test_paper_presets_consume_every_original_key_and_fill_every_one_of_ours(make, preset):
    reference = make()
    state = reference.state_dict()
    tokenizer, report = convert_original_vqvae(state, "release.pt")
    assert tokenizer.preset == preset
    assert report.ok and not report.dropped
    assert sorted(source for source, _ in report.mapped) == sorted(state)  # every original key consumed
    ours = tokenizer.state_dict()
    filled = {key for _, key in report.mapped} | {key for key, _ in report.filled}
    assert filled == set(ours)  # every one of ours filled
    for source, key in report.mapped:
        assert tuple(state[source].shape) == tuple(ours[key].shape), key
        assert torch.equal(state[source], ours[key]), key


def test_recognised_by_content_not_by_file_name(tmp_path):
    original = save_original(original_mask(), tmp_path / "looks_like_ours.safetensors")
    assert load_tokenizer(original).preset == "mask-paper"
    ours = save_tokenizer(create_tokenizer("mask-small"), tmp_path / "looks_like_the_original.pt")
    assert load_tokenizer(ours).preset == "mask-small"


def test_an_mmcv_style_meta_with_numpy_scalars_is_read(tmp_path):
    np = pytest.importorskip("numpy")
    state = original_mask().state_dict()
    path = tmp_path / "vqvae.pt"
    torch.save({"weights": state, "meta": {"best_score": np.float64(0.5), "epoch": np.int64(3)}}, path)
    assert load_tokenizer(path).preset == "mask-paper"


def test_shapes_that_fit_no_preset_are_named(tmp_path):
    torch.manual_seed(0)
    odd = OriginalVQVAE(downsample_ratio=16, config_hidden_dim=64, num_embeddings=256, codebook_dim=64)
    path = save_original(odd, tmp_path / "odd.pt")
    with pytest.raises(
        ValueError, match=r"fit no tokenizer preset: encoder channels \(8, 16, 32, 64\).*\(256, 64\)"
    ):
        load_tokenizer(path)


def test_expected_preset_mismatch_is_a_clear_error(tmp_path):
    path = save_original(original_mask(), tmp_path / "vqvae_insseg.pt")
    with pytest.raises(ValueError, match=r"preset 'mask-paper'.*expected 'depth-paper'"):
        load_tokenizer(path, expected_preset="depth-paper")


def test_an_unknown_key_is_refused_not_ignored(tmp_path):
    state = dict(original_mask().state_dict())
    state["encoder.99.weight"] = torch.zeros(3)
    torch.save({"weights": state}, tmp_path / "extra.pt")
    with pytest.raises(ValueError, match=r"not understood \(1\): encoder\.99\.weight"):
        load_tokenizer(tmp_path / "extra.pt")


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling would create the marker file
        return (open, (str(self.marker), "w"))


def test_a_pickle_holding_code_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "vqvae_depth.pt"
    torch.save({"weights": original_mask().state_dict(), "x": _Payload(marker)}, path)
    with pytest.raises(ValueError, match=r"refused to load .*vqvae_depth\.pt.*could run code"):
        load_tokenizer(path)
    legacy = tmp_path / "legacy.pt"
    with legacy.open("wb") as handle:
        pickle.dump({"weights": _Payload(marker)}, handle)
    with pytest.raises(ValueError, match=r"legacy\.pt"):
        load_tokenizer(legacy)
    assert not marker.exists()


def test_files_that_are_neither(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00\x01 definitely not a checkpoint")
    with pytest.raises(
        ValueError, match=r"junk\.pt is not a safetensors tokenizer checkpoint nor an original"
    ):
        load_tokenizer(junk)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {"layer.weight": torch.zeros(2)}}, other)
    with pytest.raises(ValueError, match=r"other\.pt is not .* original AiT VQ-VAE"):
        load_original_tokenizer(other)
    with pytest.raises(FileNotFoundError, match=r"absent\.pt"):
        safe_torch_load(tmp_path / "absent.pt")
    assert extract_original_vqvae({"weights": {"encoder.0.weight": torch.zeros(1)}}) is None


def test_non_finite_weights_are_refused(tmp_path):
    state = dict(original_mask().state_dict())
    state["decoder.0.weight"] = state["decoder.0.weight"].clone()
    state["decoder.0.weight"][0, 0] = float("nan")
    torch.save({"weights": state}, tmp_path / "nan.pt")
    with pytest.raises(ValueError, match=r"nan\.pt: non-finite weights .* decoder\.0\.weight"):
        load_tokenizer(tmp_path / "nan.pt")
