import itertools

import pytest
import torch

from ait_decoder import VocabLayout


def test_paper_layout_matches_the_original_ids():
    vocab = VocabLayout.paper(instance=True)
    assert vocab.size == 2467
    assert VocabLayout.paper(instance=False).size == 2339
    assert vocab.coord == (0, 2001)
    assert vocab.classes == (2001, 2081)
    assert vocab.special == (2081, 2082) and vocab.special_id == 2081
    assert vocab.noise == (2082, 2083) and vocab.noise_id == 2082
    assert vocab.mask_codes == (2083, 2211)
    assert vocab.depth_codes == (2211, 2339)
    assert vocab.reserved_range == (2339, 2467)
    assert vocab.num_mask_codes == 128 and vocab.num_depth_codes == 128


def test_small_layout_is_contiguous(tiny_vocab):
    ranges = [tiny_vocab.coord, tiny_vocab.classes, tiny_vocab.special, tiny_vocab.noise]
    ranges += [tiny_vocab.mask_codes, tiny_vocab.depth_codes, tiny_vocab.reserved_range]
    for (_, stop), (start, _) in itertools.pairwise(ranges):
        assert stop == start
    assert ranges[-1][1] == tiny_vocab.size == 21 + 5 + 1 + 1 + 8 + 8 + 3


def test_allowed_ranges_per_task():
    vocab = VocabLayout.paper()
    depth = vocab.allowed_ranges("depth", 225)
    assert depth.shape == (225, 2) and (depth == torch.tensor([2211, 2339])).all()

    insseg = vocab.allowed_ranges("insseg", 42)
    one = [[0, 2001]] * 4 + [[2001, 2081]] + [[2083, 2211]] * 16
    assert insseg.tolist() == one + one

    det = vocab.allowed_ranges("det", 10)
    assert det.tolist() == ([[0, 2001]] * 4 + [[2001, 2081]]) * 2


def test_allowed_ranges_rejects_partial_objects_and_unknown_tasks():
    vocab = VocabLayout.paper()
    with pytest.raises(ValueError, match="multiple"):
        vocab.allowed_ranges("insseg", 22)
    with pytest.raises(ValueError, match="unknown task"):
        vocab.allowed_ranges("pose", 5)
    with pytest.raises(ValueError, match="no depth codes"):
        VocabLayout(depth_codes=0).allowed_ranges("depth", 3)
    with pytest.raises(ValueError, match="num_bins"):
        VocabLayout(num_bins=0)


def test_check_ids_names_the_range():
    vocab = VocabLayout.paper(instance=False)
    vocab.check_ids(torch.tensor([0, 2338]))
    with pytest.raises(ValueError, match=r"\[0, 2339\).*2339"):
        vocab.check_ids(torch.tensor([0, 2339]))
    with pytest.raises(ValueError, match="integer"):
        vocab.check_ids(torch.tensor([1.0]))
