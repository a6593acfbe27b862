"""ait_tokenizer: VQ-VAE tokenizers for depth maps and instance masks, soft tokens, mask augmentation."""

from ait_tokenizer.augment import mask_augment, random_patch_mask
from ait_tokenizer.checkpoint import load_tokenizer, read_metadata, save_tokenizer
from ait_tokenizer.model import TokenizerConfig, TokenizerOutput, VQVAETokenizer
from ait_tokenizer.quantizer import EMAVectorQuantizer, utilisation
from ait_tokenizer.registry import create_tokenizer, list_tokenizers, register_tokenizer, tokenizer_config
from ait_tokenizer.soft_lookup import soft_lookup

__all__ = [
    "EMAVectorQuantizer",
    "TokenizerConfig",
    "TokenizerOutput",
    "VQVAETokenizer",
    "create_tokenizer",
    "list_tokenizers",
    "load_tokenizer",
    "mask_augment",
    "random_patch_mask",
    "read_metadata",
    "register_tokenizer",
    "save_tokenizer",
    "soft_lookup",
    "tokenizer_config",
    "utilisation",
]
