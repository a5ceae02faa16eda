"""detlight.optim."""
