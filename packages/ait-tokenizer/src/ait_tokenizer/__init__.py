"""ait_tokenizer."""
