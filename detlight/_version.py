"""The detlight version (its own module so that code inside the package reads it without importing ``detlight``)."""

__version__ = "0.1.0"
