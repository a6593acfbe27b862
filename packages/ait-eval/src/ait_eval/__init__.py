"""ait_eval."""
