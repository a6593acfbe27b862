"""ait_decoder."""
