"""Numba kernels, one module per layer family. Arrays and scalars only; each parallel loop gives every thread
its own block of outputs, so results are bit-identical for any thread count."""
