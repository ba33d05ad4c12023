"""qff: symmetry-invariant quantum neural network force fields.

The library works without Prefect; ``flows/`` wraps it. Units inside: Angstrom, eV, eV/Angstrom.
"""

__version__ = "0.1.0"
