"""detlight.compat."""
