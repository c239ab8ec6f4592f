"""Visualization: reasoning overlays, frames and GIFs."""
