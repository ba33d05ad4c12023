"""Molecules from files: XYZ (one or more frames) and YAML specs (``MoleculeFile``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from qff_core.errors import GeometryError, GeometryFileError, InputError, UnknownElementError
from qff_core.molecules.spec import CenterRule, MoleculeSpec, make_molecule, normalize_symbol


def read_xyz(path: str | Path) -> list[tuple[tuple[str, ...], np.ndarray, str]]:
    """All frames of an XYZ file as (symbols, positions_a, comment); clear errors on bad files."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise GeometryFileError(f"cannot read {path}: {exc.strerror}") from exc
    frames = []
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        try:
            n = int(lines[i].split()[0])
        except (ValueError, IndexError):
            raise GeometryFileError(
                f"{path}:{i + 1}: expected the atom count of an XYZ frame, found {lines[i]!r}"
            ) from None
        if n <= 0:
            raise GeometryFileError(f"{path}:{i + 1}: the atom count must be positive, got {n}")
        if i + 2 + n > len(lines):
            raise GeometryFileError(
                f"{path}: frame at line {i + 1} announces {n} atoms but the file ends after "
                f"{max(len(lines) - i - 2, 0)} atom lines"
            )
        comment = lines[i + 1]
        symbols, pos = [], []
        for k in range(i + 2, i + 2 + n):
            parts = lines[k].split()
            if len(parts) < 4:
                raise GeometryFileError(f"{path}:{k + 1}: expected 'symbol x y z', found {lines[k]!r}")
            try:
                xyz = [float(v) for v in parts[1:4]]
            except ValueError:
                raise GeometryFileError(f"{path}:{k + 1}: coordinates are not numbers: {lines[k]!r}") from None
            try:
                symbols.append(normalize_symbol(parts[0]))
            except UnknownElementError as exc:
                raise UnknownElementError(f"{path}:{k + 1}: {exc}") from None
            pos.append(xyz)
        frames.append((tuple(symbols), np.array(pos), comment))
        i += 2 + n
    if not frames:
        raise GeometryFileError(f"{path} holds no XYZ frame")
    return frames


def molecule_from_xyz(path: str | Path, *, name: str | None = None, center: CenterRule = "auto",
                      fragments: Sequence[Sequence[int]] | None = None) -> MoleculeSpec:
    """A spec from the first frame of an XYZ file (Angstrom)."""
    symbols, pos, _ = read_xyz(path)[0]
    try:
        return make_molecule(name or Path(path).stem, symbols, pos, center=center, fragments=fragments)
    except GeometryError as exc:
        raise GeometryError(f"{path}: {exc}") from None


class MoleculeFile(BaseModel):
    """The YAML form of a molecule spec (positions in Angstrom, or an XYZ file beside it)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    symbols: list[str | int] | None = None
    positions_a: list[list[float]] | None = None
    xyz: str | None = Field(None, description="XYZ file, relative to the YAML file")
    center: int | str | None = "auto"
    fragments: list[list[int]] | None = None
    permutations: list[list[int]] | None = None
    charge: int = 0
    multiplicity: Literal[1, 2, 3, 4, 5] = 1

    @model_validator(mode="after")
    def _one_symmetry_rule(self) -> MoleculeFile:
        if self.fragments is not None and self.permutations is not None:
            raise ValueError("give fragments or permutations, not both: permutations would silently replace the "
                             "fragment group")
        return self


def molecule_from_yaml(path: str | Path) -> MoleculeSpec:
    """A spec from a YAML file (see ``MoleculeFile``)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise GeometryFileError(f"cannot read {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise GeometryFileError(f"{path} is not valid YAML: {exc}") from exc
    try:
        spec = MoleculeFile.model_validate(raw)
    except ValidationError as exc:
        raise GeometryFileError(f"{path} is not a valid molecule spec:\n{exc}") from exc
    if spec.xyz is not None:
        if spec.symbols is not None or spec.positions_a is not None:
            raise GeometryFileError(f"{path}: give either 'xyz' or 'symbols' + 'positions_a', not both")
        symbols, positions, _ = read_xyz(path.parent / spec.xyz)[0]
    elif spec.symbols is None or spec.positions_a is None:
        raise GeometryFileError(f"{path}: give 'symbols' and 'positions_a' (Angstrom), or 'xyz'")
    else:
        symbols, positions = spec.symbols, spec.positions_a
    try:
        return make_molecule(
            spec.name, symbols, positions, center=spec.center, fragments=spec.fragments,
            permutations=spec.permutations, charge=spec.charge, multiplicity=spec.multiplicity,
        )
    except InputError as exc:  # the same kind of error, saying which file
        raise type(exc)(f"{path}: {exc}") from None
