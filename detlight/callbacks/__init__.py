"""detlight.callbacks."""
