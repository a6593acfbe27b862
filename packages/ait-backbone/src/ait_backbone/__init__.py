"""ait_backbone."""
