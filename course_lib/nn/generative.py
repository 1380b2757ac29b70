"""Generators and critics: AdaIN, DCGAN-style blocks, PatchGAN and a StyleGAN-like toy (chapter 10)."""

from __future__ import annotations

__all__: list[str] = []
