"""detlight.data."""
