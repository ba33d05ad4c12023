"""User-facing model hyperparameters (validated; one YAML block or CLI flags)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_EPS = 1e-3
"""Standard deviation (radians) of the initial symmetry-breaking angles."""


class ModelConfig(BaseModel):
    """Hyperparameters of an siVQLM, of the generic baseline built on the same qubits, or of the
    fragment model (one shared monomer siVQLM plus one pair siVQLM; ``pair_*`` apply to it only)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: Literal["invariant", "generic", "fragment"] = Field(
        "invariant", description="invariant siVQLM, generic baseline, or fragment model (monomer + pair siVQLMs)")
    depth: int = Field(6, ge=0, le=64, description="trainable layers D (D+1 encoding layers)")
    blocks: int = Field(1, ge=1, le=16, description="repetitions B of each trainable block")
    rep: int = Field(2, ge=1, le=8, description="qubits (copies) per encoded atom")
    pattern: Literal["ring", "all-to-all", "comb"] = Field(
        "ring", description="exchange pairs before closing them under the permutation group: a ring over all data "
        "qubits, every pair, or a comb (a ring over the atoms of copy 0, each atom's copies in a chain: a tree on "
        "H2O and LiH, so it routes on heavy-hex devices without SWAPs)"
    )
    observable: Literal["singlet", "all-pairs"] = Field(
        "singlet", description="orbit of the first singlet pair, or every pair of data qubits"
    )
    symmetry_breaking: Literal["off", "trainable", "frozen"] = Field(
        "off", description="RZ(eps) on every qubit after each trainable block (invariant model only)"
    )
    symmetry_breaking_eps: float = Field(
        DEFAULT_EPS, ge=0, le=3.15, description="standard deviation (radians) of the initial RZ(eps) angles of "
        "--symmetry-breaking; frozen keeps them, 0 gives the exactly invariant model with idle RZ gates")
    symmetrize_inversion: bool = Field(False, description="E = (E(X) + E(-X)) / 2")
    pair_depth: int | None = Field(None, ge=0, le=64, description="fragment model: depth of the pair model "
                                                                  "(default: depth)")
    pair_rep: int = Field(1, ge=1, le=8, description="fragment model: qubits per encoded atom of the pair model")

    @model_validator(mode="after")
    def _settings_of_another_model(self) -> ModelConfig:
        if self.model == "generic" and self.symmetry_breaking != "off":
            raise ValueError("symmetry_breaking adds RZ(eps) gates to the invariant (and fragment) model; the generic "
                             "baseline has no symmetry to break: drop it")
        if self.model != "fragment" and (self.pair_depth is not None or self.pair_rep != 1):
            raise ValueError("pair_depth and pair_rep set the pair model of the fragment model; give --model fragment "
                             "or drop them")
        return self

    @model_validator(mode="after")
    def _eps_needs_symmetry_breaking(self) -> ModelConfig:
        if self.symmetry_breaking == "off" and self.symmetry_breaking_eps != DEFAULT_EPS:
            raise ValueError("symmetry_breaking_eps sets the RZ(eps) angles of --symmetry-breaking trainable|frozen; "
                             "give one of those too, or drop it")
        return self
