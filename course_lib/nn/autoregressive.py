"""Autoregressive image models: masked convolutions and PixelCNN (chapter 09)."""

from __future__ import annotations

__all__: list[str] = []
