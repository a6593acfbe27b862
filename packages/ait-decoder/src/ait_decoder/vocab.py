"""The shared token vocabulary: which id ranges mean coordinates, classes, codebook entries.

Layout (the paper's numbers with ``num_bins=2000, num_classes=80, mask_codes=128, depth_codes=128``)::

    [0, 2001)      coordinate bins 0..num_bins (both ends included, hence num_bins + 1 ids)
    [2001, 2081)   the 80 object classes
    2081           special (unused by AiT; kept so ids match the original)
    2082           "noise" class of Pix2Seq-style padding objects
    [2083, 2211)   instance-mask codebook
    [2211, 2339)   depth codebook
    [2339, 2467)   reserved (instance-seg and joint configs only)

Every range is a half-open ``(start, stop)`` pair of ints.
"""

from __future__ import annotations

import torch

TASKS = ("depth", "insseg", "det")


class VocabLayout:
    """Id ranges of the AiT vocabulary. Smaller layouts (fewer bins or codes) serve tiny CPU configs.

    The constructor takes *sizes* (``mask_codes=128`` codebook entries); the attributes of the same names
    (``vocab.mask_codes``, ``vocab.depth_codes``, and ``coord``, ``classes``, ``noise``, ``special``,
    ``reserved_range``) are half-open ``(start, stop)`` id ranges, as docs/CONTRACTS.md specifies. The sizes
    stay available as ``num_mask_codes``, ``num_depth_codes``, ``num_reserved``; single ids as
    ``noise_id`` and ``special_id``.
    """

    def __init__(
        self,
        num_bins: int = 2000,
        num_classes: int = 80,
        mask_codes: int = 128,
        depth_codes: int = 128,
        reserved: int = 0,
        tokens_per_mask: int = 16,  # the mask tokenizer turns a 64×64 crop into 4×4 tokens
    ) -> None:
        for name, value, minimum in (
            ("num_bins", num_bins, 1),
            ("num_classes", num_classes, 1),
            ("tokens_per_mask", tokens_per_mask, 1),
            ("mask_codes", mask_codes, 0),
            ("depth_codes", depth_codes, 0),
            ("reserved", reserved, 0),
        ):
            if not isinstance(value, int) or value < minimum:
                raise ValueError(f"VocabLayout {name} must be an int >= {minimum}, received {value!r}")
        self.num_bins = num_bins
        self.num_classes = num_classes
        self.num_mask_codes = mask_codes
        self.num_depth_codes = depth_codes
        self.num_reserved = reserved
        self.tokens_per_mask = tokens_per_mask

    @classmethod
    def paper(cls, instance: bool = True) -> VocabLayout:
        """The original's layout: 2467 ids with the 128 reserved ids of instance/joint configs, else 2339."""
        return cls(reserved=128 if instance else 0)

    def _key(self) -> tuple[int, ...]:
        return (
            self.num_bins,
            self.num_classes,
            self.num_mask_codes,
            self.num_depth_codes,
            self.num_reserved,
            self.tokens_per_mask,
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VocabLayout) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"VocabLayout(num_bins={self.num_bins}, num_classes={self.num_classes}, "
            f"mask_codes={self.num_mask_codes}, depth_codes={self.num_depth_codes}, "
            f"reserved={self.num_reserved}, tokens_per_mask={self.tokens_per_mask}; size={self.size})"
        )

    # --- ranges (half-open) --------------------------------------------------------------------------
    @property
    def coord(self) -> tuple[int, int]:
        return (0, self.num_bins + 1)

    @property
    def classes(self) -> tuple[int, int]:
        start = self.coord[1]
        return (start, start + self.num_classes)

    @property
    def special_id(self) -> int:
        return self.classes[1]

    @property
    def special(self) -> tuple[int, int]:
        return (self.special_id, self.special_id + 1)

    @property
    def noise_id(self) -> int:
        return self.special_id + 1

    @property
    def noise(self) -> tuple[int, int]:
        return (self.noise_id, self.noise_id + 1)

    @property
    def mask_codes(self) -> tuple[int, int]:
        start = self.noise_id + 1
        return (start, start + self.num_mask_codes)

    @property
    def depth_codes(self) -> tuple[int, int]:
        start = self.mask_codes[1]
        return (start, start + self.num_depth_codes)

    @property
    def reserved_range(self) -> tuple[int, int]:
        start = self.depth_codes[1]
        return (start, start + self.num_reserved)

    @property
    def size(self) -> int:
        return self.reserved_range[1]

    # --- per-task sequence structure ---------------------------------------------------------------
    def tokens_per_object(self, task: str) -> int:
        """Tokens one object takes: 4 box corners + class (+ mask tokens for instance segmentation)."""
        if task == "insseg":
            return 5 + self.tokens_per_mask
        if task == "det":
            return 5
        raise ValueError(f"task {task!r} has no objects; expected 'insseg' or 'det'")

    def allowed_ranges(self, task: str, length: int) -> torch.Tensor:
        """``LongTensor (length, 2)``: the half-open id range ``[lo, hi)`` position ``t`` may hold.

        ``"depth"``: every position is a depth code. ``"insseg"``: per object of 21 tokens, 4 coordinate
        positions, 1 class position (the 80 classes only: the noise id is never *sampled*, although its
        logit still enters the score) and 16 mask-code positions. ``"det"``: 4 coordinates + class.
        """
        if length < 0:
            raise ValueError(f"length must be >= 0, received {length}")
        if task == "depth":
            if self.num_depth_codes == 0:
                raise ValueError("this VocabLayout has no depth codes (depth_codes=0)")
            return torch.tensor([self.depth_codes], dtype=torch.long).repeat(length, 1)
        if task not in ("insseg", "det"):
            raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
        per_object = self.tokens_per_object(task)
        if length % per_object:
            raise ValueError(
                f"a {task!r} sequence holds whole objects of {per_object} tokens; length {length} is not a multiple"
            )
        if task == "insseg" and self.num_mask_codes == 0:
            raise ValueError("this VocabLayout has no mask codes (mask_codes=0); use task 'det'")
        one_object = [self.coord] * 4 + [self.classes]
        if task == "insseg":
            one_object += [self.mask_codes] * self.tokens_per_mask
        return torch.tensor(one_object, dtype=torch.long).repeat(length // per_object, 1)

    def check_ids(self, ids: torch.Tensor, what: str = "ids") -> None:
        """Raise ``ValueError`` unless every id lies in ``[0, size)``."""
        if ids.dtype.is_floating_point or ids.dtype == torch.bool:
            raise ValueError(f"{what} must be an integer tensor, received dtype {ids.dtype}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.size):
            raise ValueError(
                f"{what} must lie in [0, {self.size}) (vocabulary size), received values in "
                f"[{int(ids.min())}, {int(ids.max())}]"
            )
