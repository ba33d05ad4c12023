"""Lasting data: reference datasets in Zarr (``dataset.py``), training checkpoints in Zarr
(``checkpoint.py``, written whole or not at all) and the YAML data catalog (``catalog.py``)."""
