"""Model builders (invariant siVQLM, generic baseline, fragment model), their IR and parameter initialisation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np

from qff_core.errors import ModelBuildError
from qff_core.models.config import DEFAULT_EPS, ModelConfig
from qff_core.models.fragment import AnyModel, FragmentModel, build_fragment
from qff_core.models.generic import build_generic
from qff_core.models.invariant import build_invariant
from qff_core.models.ir import Encode
from qff_core.molecules import MoleculeSpec

BUILDERS: dict[str, Callable[[MoleculeSpec, ModelConfig], AnyModel]] = {
    "invariant": build_invariant,
    "generic": build_generic,
    "fragment": build_fragment,
}


def build_model(molecule: MoleculeSpec, config: ModelConfig | None = None, **overrides) -> AnyModel:
    """Build the model named by ``config.model`` (``invariant``, ``generic`` or ``fragment``) for ``molecule``."""
    cfg = config or ModelConfig()
    if overrides:
        cfg = ModelConfig.model_validate({**cfg.model_dump(), **overrides})
    try:
        builder = BUILDERS[cfg.model]
    except KeyError:  # pragma: no cover - pydantic restricts the name already
        raise ModelBuildError(f"unknown model {cfg.model!r}; choose one of {sorted(BUILDERS)}") from None
    return builder(molecule, cfg)


InitStrategy = Literal["near_identity", "random"]


def init_parameters(model: AnyModel, seed: int = 0, strategy: InitStrategy = "near_identity") -> np.ndarray:
    """A parameter vector for ``model`` (float64), with s = 1 eV and e0 = 0 eV.

    ``near_identity`` (training default, model.md): exchange weights ~0 except the first of each
    layer, alphas ~1 with different values per copy so that paired copies do not cancel,
    generic rotations small. ``random``: every angle uniform in [-pi, pi) (for audits).
    Symmetry-breaking angles start at N(0, 1e-3) in both. A fragment model gets each block
    initialised as its sub-model (seeds drawn from ``seed``), both s = 1, every e0 = 0.
    """
    if isinstance(model, FragmentModel):
        seeds = np.random.SeedSequence(seed).generate_state(2)
        blocks = [init_parameters(sub, seed=int(s), strategy=strategy)
                  for sub, s in zip((model.monomer, model.pair), seeds, strict=True)]
        return np.concatenate([*blocks, [0.0]])
    rng = np.random.default_rng(seed)
    theta = np.zeros(model.n_parameters)
    copy_of_alpha: dict[int, int] = {}
    for g in model.gates():
        if isinstance(g, Encode):
            copy_of_alpha[g.alpha] = model.qubit_copies[g.qubit] or 0
    seen_layers: set[int | None] = set()
    eps_scale = float(model.hyperparameters.get("symmetry_breaking_eps", DEFAULT_EPS))
    for i, p in enumerate(model.parameters):
        if p.kind == "scale":
            theta[i] = 1.0
        elif p.kind == "offset":
            theta[i] = 0.0
        elif p.kind == "eps":
            theta[i] = rng.normal(0.0, eps_scale) if eps_scale > 0 else 0.0
        elif strategy == "random":
            theta[i] = rng.uniform(-np.pi, np.pi)
        elif p.kind == "alpha":
            theta[i] = 1.0 + 0.5 * copy_of_alpha.get(i, 0) + rng.normal(0.0, 0.05)
        elif p.kind == "J":
            theta[i] = np.pi / 8 if p.layer not in seen_layers else rng.normal(0.0, 1e-2)
            seen_layers.add(p.layer)
        elif p.kind == "encoding_scale":
            theta[i] = 1.0 + rng.normal(0.0, 0.05)
        else:
            theta[i] = rng.normal(0.0, 0.1)
    return theta


__all__ = ["BUILDERS", "AnyModel", "FragmentModel", "ModelConfig", "build_fragment", "build_generic", "build_invariant",
           "build_model", "init_parameters"]
