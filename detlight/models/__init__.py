"""detlight.models."""
