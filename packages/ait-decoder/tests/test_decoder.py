import pytest
import torch

from ait_decoder import AiTDecoder, DecoderConfig, VocabLayout, sine_coordinate_codes
from ait_decoder.testing import random_features
from ait_decoder.testing import tiny_decoder as make_tiny_decoder
from ait_decoder.testing import tiny_vocab as make_tiny_vocab


def test_shapes_and_memory(tiny_decoder):
    memory = tiny_decoder.encode(random_features(2))
    assert memory.tokens.shape == (2, 12, 32) and memory.grid == (3, 4)
    ids = torch.randint(0, tiny_decoder.config.vocab_size, (2, 16))
    assert tiny_decoder(memory, ids, "depth").shape == (2, 16, tiny_decoder.config.vocab_size)
    assert tiny_decoder(memory, None, "depth", parallel=True, length=7).shape == (
        2,
        7,
        tiny_decoder.config.vocab_size,
    )


def test_teacher_forcing_is_causal_and_shifted(tiny_decoder):
    """logits[:, t] sees the prompt and input_ids[:, :t] only: changing token t moves logits after t."""
    memory = tiny_decoder.encode(random_features(1))
    ids = torch.randint(
        0, tiny_decoder.config.vocab_size, (1, 10), generator=torch.Generator().manual_seed(0)
    )
    base = tiny_decoder(memory, ids, "depth")
    changed = ids.clone()
    changed[0, 4] = (ids[0, 4] + 1) % tiny_decoder.config.vocab_size
    out = tiny_decoder(memory, changed, "depth")
    torch.testing.assert_close(out[:, :5], base[:, :5], rtol=0, atol=0)
    assert not torch.allclose(out[:, 5:], base[:, 5:])
    last = ids.clone()
    last[0, -1] = (ids[0, -1] + 1) % tiny_decoder.config.vocab_size  # the last target is never an input
    torch.testing.assert_close(tiny_decoder(memory, last, "depth"), base, rtol=0, atol=0)


def test_initialisation_follows_the_original():
    """timm's trunc_normal_(std=.02) keeps its default bounds a=-2, b=2 in absolute units: +-100 sigma, so
    the original's weights are an untruncated N(0, 0.02^2) (a +-2 sigma cut would make the std 0.0176)."""
    model = make_tiny_decoder(d_model=64, nhead=4, dim_feedforward=256)
    weights = torch.cat([model.blocks[i].mlp.fc1.weight.flatten() for i in range(len(model.blocks))])
    weights = torch.cat([weights, model.token_embed.weight.flatten()]).double()
    n = weights.numel()
    # the std of n normal draws is within 4 standard errors (0.02 / sqrt(2n)) of 0.02
    assert abs(weights.std().item() - 0.02) < 4 * 0.02 / (2 * n) ** 0.5
    # 4.55 % of a normal lies beyond 2 sigma (none after a +-2 sigma truncation)
    beyond = (weights.abs() > 0.04).double().mean().item()
    assert abs(beyond - 0.0455) < 4 * (0.0455 * 0.9545 / n) ** 0.5
    assert torch.count_nonzero(model.blocks[0].mlp.fc1.bias) == 0
    assert model.output_bias.abs().max() > 0  # trunc-normal, as the original's outp_bias
    assert torch.equal(model.final_norm.weight, torch.ones(64))


def test_coordinate_embeddings_start_from_the_given_codes_and_the_output_ties_to_them():
    model = make_tiny_decoder(d_model=32)
    vocab = make_tiny_vocab()
    first, stop = vocab.coord
    before = model.token_embed.weight.detach().clone()
    codes = sine_coordinate_codes(vocab.num_bins, 40, 8, 32)
    model.init_coordinate_embeddings(first, codes)
    rows = model.token_embed.weight.detach()
    # the same codes, scaled to the random rows' RMS; every other token untouched
    scale = (codes.pow(2).mean().sqrt() / 0.02).item()
    torch.testing.assert_close(rows[first:stop].double() * scale, codes, rtol=1e-5, atol=1e-6)
    assert torch.equal(rows[stop:], before[stop:])
    # tied: a hidden state equal to bin b's embedding scores bin b above the bins far from it
    logits = model.logits(rows[first + 10][None, None]) - model.output_bias.detach()
    far = torch.cat([logits[0, 0, first : first + 5], logits[0, 0, first + 16 : stop]])
    assert logits[0, 0, first + 10] > far.max()


@pytest.mark.parametrize(("first", "shape"), [(0, (21, 30)), (-1, (21, 32)), (200, (21, 32))])
def test_coordinate_embeddings_of_the_wrong_shape_or_place_are_refused(first, shape):
    model = make_tiny_decoder(d_model=32)
    with pytest.raises(ValueError, match="codes must be"):
        model.init_coordinate_embeddings(first, torch.zeros(shape))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("batch", [1, 3])
def test_cached_greedy_equals_uncached(dtype, batch):
    model = make_tiny_decoder(dtype)
    memory = model.encode(random_features(batch, dtype))
    vocab = make_tiny_vocab()
    for task, length in (("depth", 16), ("insseg", 27)):
        allowed = vocab.allowed_ranges(task, length)
        cached = model.generate(memory, task, length, allowed=allowed)
        uncached = model.generate(memory, task, length, allowed=allowed, use_cache=False)
        assert torch.equal(cached.ids, uncached.ids)
        tolerance = 1e-12 if dtype == torch.float64 else 1e-5
        torch.testing.assert_close(cached.logits, uncached.logits, rtol=tolerance, atol=tolerance)
        lo, hi = allowed[:, 0], allowed[:, 1]
        assert ((cached.ids >= lo) & (cached.ids < hi)).all()


def test_greedy_equals_teacher_forcing_on_its_own_output():
    """Feeding the greedy output back with teacher forcing reproduces the generation logits."""
    model = make_tiny_decoder(torch.float64)
    memory = model.encode(random_features(2, torch.float64))
    out = model.generate(memory, "depth", 16)
    torch.testing.assert_close(model(memory, out.ids, "depth"), out.logits, rtol=1e-12, atol=1e-12)
    assert torch.equal(out.ids, out.logits.argmax(-1))


def test_top_p_is_seeded_and_cache_independent():
    model = make_tiny_decoder(torch.float64)
    memory = model.encode(random_features(4, torch.float64))
    vocab = make_tiny_vocab()
    allowed = vocab.allowed_ranges("insseg", 27)

    def sample(seed, **kwargs):
        generator = torch.Generator().manual_seed(seed)
        kwargs = dict(allowed=allowed, strategy="top_p", top_p=0.9, generator=generator) | kwargs
        return model.generate(memory, "insseg", 27, **kwargs).ids

    first = sample(0)
    assert torch.equal(first, sample(0))
    assert torch.equal(first, sample(0, use_cache=False))
    assert not torch.equal(first, sample(1))
    assert ((first >= allowed[:, 0]) & (first < allowed[:, 1])).all()


def test_soft_next_token_input():
    model = make_tiny_decoder(torch.float64)
    memory = model.encode(random_features(2, torch.float64))
    vocab = make_tiny_vocab()
    allowed = vocab.allowed_ranges("insseg", 27)
    soft = torch.zeros(27, dtype=torch.bool)
    soft[5:9] = True  # the first object's mask positions, as the AiT instance config
    soft[14:18] = True
    cached = model.generate(memory, "insseg", 27, allowed=allowed, soft_positions=soft)
    uncached = model.generate(memory, "insseg", 27, allowed=allowed, soft_positions=soft, use_cache=False)
    assert torch.equal(cached.ids, uncached.ids)
    torch.testing.assert_close(cached.logits, uncached.logits, rtol=1e-12, atol=1e-12)
    hard = model.generate(memory, "insseg", 27, allowed=allowed)
    torch.testing.assert_close(
        cached.logits[:, :6], hard.logits[:, :6], rtol=0, atol=0
    )  # same until the first soft input
    assert not torch.allclose(cached.logits[:, 6:], hard.logits[:, 6:])

    # The soft input after position 5 is softmax(restricted logits) @ embedding rows: check by teacher forcing.
    lo, hi = vocab.mask_codes
    probs = torch.softmax(cached.logits[:, 5, lo:hi], dim=-1)
    mixed = probs @ model.token_embed.weight[lo:hi]
    inputs = torch.cat(
        [model.prompt("insseg", 2), model.token_embed(cached.ids[:, :5]), mixed[:, None]], dim=1
    )
    logits = model.decode_embeddings(inputs, memory, "insseg")
    torch.testing.assert_close(logits[:, 6], cached.logits[:, 6], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", [{}, {"use_cache": False}, {"parallel": True}])
def test_logit_span_computes_only_those_ids_and_chooses_the_same(mode):
    model = make_tiny_decoder(torch.float64)
    memory = model.encode(random_features(2, torch.float64))
    vocab = make_tiny_vocab()
    for task, length, span in (("depth", 16, vocab.depth_codes), ("insseg", 27, (0, vocab.mask_codes[1]))):
        allowed = vocab.allowed_ranges(task, length)
        full = model.generate(memory, task, length, allowed=allowed, **mode)
        spanned = model.generate(memory, task, length, allowed=allowed, logit_span=span, **mode)
        assert torch.equal(spanned.ids, full.ids)
        lo, hi = span
        torch.testing.assert_close(
            spanned.logits[..., lo:hi], full.logits[..., lo:hi], rtol=1e-12, atol=1e-12
        )
        assert (
            torch.isneginf(spanned.logits[..., :lo]).all() and torch.isneginf(spanned.logits[..., hi:]).all()
        )
        assert torch.isfinite(full.logits).all()
    with pytest.raises(ValueError, match="outside logit_span"):
        model.generate(
            memory, "insseg", 27, allowed=vocab.allowed_ranges("insseg", 27), logit_span=vocab.depth_codes
        )
    with pytest.raises(ValueError, match="vocab span"):
        model.generate(memory, "depth", 4, logit_span=(5, 5))


def test_step_output_layer_has_the_span_rows_only():
    model = make_tiny_decoder()
    memory = model.encode(random_features(1))
    lo, hi = make_tiny_vocab().depth_codes
    state = model.start_decoding(memory, "depth", 4, vocab_span=(lo, hi))
    assert state.vocab_span == (lo, hi) and state.output.weight_t.shape == (model.config.d_model, hi - lo)
    with torch.inference_mode():
        step = model.decode_step(state, model.prompt("depth", 1)[:, 0], 0)
        full = model.decode_step(model.start_decoding(memory, "depth", 4), model.prompt("depth", 1)[:, 0], 0)
    assert step.shape == (1, hi - lo)
    torch.testing.assert_close(step, full[:, lo:hi])


def test_parallel_single_pass_equals_the_step_loop():
    """AiT-P: one pass == the original's loop of steps that each feed the mask embedding."""
    model = make_tiny_decoder(torch.float64, tasks={"depth": 225})
    memory = model.encode(random_features(2, torch.float64, grid=(5, 5)))
    length = 225
    parallel = model.generate(memory, "depth", length, parallel=True)

    state = model.start_decoding(memory, "depth", length)
    inputs = model.prompt("depth", 2)[:, 0]
    loop_logits = []
    with torch.inference_mode():
        for t in range(length):
            loop_logits.append(model.decode_step(state, inputs, t))
            inputs = model.mask_embed.expand(2, -1)
    loop_logits = torch.stack(loop_logits, dim=1)
    torch.testing.assert_close(parallel.logits, loop_logits, rtol=1e-10, atol=1e-10)
    assert torch.equal(parallel.ids, loop_logits.argmax(-1))
    torch.testing.assert_close(model(memory, None, "depth", parallel=True, length=length), parallel.logits)


def test_parallel_respects_allowed_ranges(tiny_decoder, tiny_vocab):
    memory = tiny_decoder.encode(random_features(2))
    allowed = tiny_vocab.allowed_ranges("insseg", 27)
    for strategy in ("greedy", "top_p"):
        out = tiny_decoder.generate(
            memory,
            "insseg",
            27,
            allowed=allowed,
            parallel=True,
            strategy=strategy,
            generator=torch.Generator(),
        )
        assert ((out.ids >= allowed[:, 0]) & (out.ids < allowed[:, 1])).all()


def test_one_memory_serves_several_sequences(tiny_decoder):
    memory = tiny_decoder.encode(random_features(1))
    ids = torch.randint(0, tiny_decoder.config.vocab_size, (3, 8))
    logits = tiny_decoder(memory, ids, "depth")
    torch.testing.assert_close(logits[1], tiny_decoder(memory, ids[1:2], "depth")[0])


def test_generate_keeps_training_mode_and_has_eval_semantics():
    model = make_tiny_decoder(dropout=0.5, drop_path=0.5).train()
    memory = model.encode(random_features(1))
    a = model.generate(memory, "depth", 8)
    b = model.generate(memory, "depth", 8, use_cache=False)
    assert model.training
    assert torch.equal(a.ids, b.ids)


def test_dropout_is_active_in_training():
    model = make_tiny_decoder(dropout=0.5).train()
    features = random_features(1)
    assert not torch.equal(model.encode(features).tokens, model.encode(features).tokens)


def test_gradients_reach_every_parameter(tiny_decoder):
    tiny_decoder.train()
    memory = tiny_decoder.encode(random_features(2))
    ids = torch.randint(0, tiny_decoder.config.vocab_size, (2, 16))
    loss = tiny_decoder(memory, ids, "depth").logsumexp(-1).mean()
    loss = loss + tiny_decoder(memory, None, "depth", parallel=True, length=4).mean()
    loss = loss + tiny_decoder(memory, ids[:, :10], "det").mean() + tiny_decoder(memory, ids, "insseg").mean()
    loss.backward()
    missing = [name for name, p in tiny_decoder.named_parameters() if p.grad is None]
    assert missing == []


def test_bad_inputs_raise_clear_errors(tiny_decoder):
    memory = tiny_decoder.encode(random_features(2))
    vocab_size = tiny_decoder.config.vocab_size
    with pytest.raises(ValueError, match=r"\(B, 12, h, w\).*\(2, 7, 3, 4\)"):
        tiny_decoder.encode(torch.zeros(2, 7, 3, 4))
    with pytest.raises(ValueError, match=rf"\[0, {vocab_size}\)"):
        tiny_decoder(memory, torch.full((2, 4), vocab_size), "depth")
    with pytest.raises(ValueError, match=rf"\[0, {vocab_size}\)"):
        tiny_decoder(memory, torch.full((2, 4), -1), "depth")
    with pytest.raises(ValueError, match=r"length 1\.\.16"):
        tiny_decoder(memory, torch.zeros(2, 17, dtype=torch.long), "depth")
    with pytest.raises(ValueError, match="unknown task"):
        tiny_decoder.generate(memory, "pose", 4)
    with pytest.raises(ValueError, match="allowed must be"):
        tiny_decoder.generate(memory, "depth", 4, allowed=torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="lo < hi"):
        tiny_decoder.generate(memory, "depth", 1, allowed=torch.tensor([[5, 5]]))
    with pytest.raises(ValueError, match="strategy"):
        tiny_decoder.generate(memory, "depth", 4, strategy="beam")
    with pytest.raises(ValueError, match="top_p"):
        tiny_decoder.generate(memory, "depth", 4, strategy="top_p", top_p=0.0)
    with pytest.raises(ValueError, match="images"):
        tiny_decoder(memory, torch.zeros(3, 4, dtype=torch.long), "depth")
    with pytest.raises(ValueError, match="divisible"):
        DecoderConfig(in_channels=4, vocab_size=10, d_model=30, nhead=4)


def test_paper_configuration_builds():
    vocab = VocabLayout.paper(instance=True)
    config = DecoderConfig(in_channels=1024, vocab_size=vocab.size, tasks={"depth": 225, "insseg": 2100})
    with torch.device("meta"):  # shapes only: skips the cost of initialising 13 M parameters
        model = AiTDecoder(config)
    assert model.task_positions["insseg"].shape == (2100, 256)
    assert model.token_embed.weight.shape == (2467, 256)
    assert len(model.blocks) == 6 and len(model.neck.blocks) == 6
    assert model.blocks[0].mlp.fc1.out_features == 1024 and model.blocks[0].self_attn.num_heads == 8
