"""Reading the YAML settings files every command takes (``--config``, ``--cluster``)."""

from __future__ import annotations

from pathlib import Path

import yaml

from qff_core.errors import InputError


def load_mapping(path: str | Path, what: str = "settings file") -> dict:
    """The mapping a YAML file holds; InputError (saying which file and why) otherwise. An empty file is refused:
    taken as "all defaults", a truncated file ran the whole default pipeline."""
    path = Path(path)
    try:
        loaded = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise InputError(f"cannot read the {what} {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise InputError(f"the {what} {path} is not valid YAML: {exc}") from exc
    if loaded is None:
        raise InputError(f"the {what} {path} is empty (or only comments); write the settings in it (where the "
                         "file is optional, leaving it out uses the defaults)")
    if not isinstance(loaded, dict):
        raise InputError(f"the {what} {path} must hold a mapping of settings")
    return loaded
