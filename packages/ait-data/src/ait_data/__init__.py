"""ait_data."""
