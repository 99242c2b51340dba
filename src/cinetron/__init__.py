"""Cinetron: text-to-video served by NVIDIA Triton Inference Server."""

__version__ = "0.1.0"
