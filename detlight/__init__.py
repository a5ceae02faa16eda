"""detlight: mmdetection-style detection training, run by PyTorch Lightning."""
__version__ = "0.1.0"
