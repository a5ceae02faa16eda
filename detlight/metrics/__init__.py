"""detlight.metrics."""
