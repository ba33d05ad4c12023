"""Qiskit: the compiler of the model IR into one parametrised circuit template, and the evaluators that
run it (exact or sampled Aer, IBM Runtime's client-side Estimator)."""
