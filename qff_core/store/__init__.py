"""Lasting numeric data in Zarr: reference datasets (and, later, checkpoints and the catalog)."""
