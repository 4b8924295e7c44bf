"""Private, pure @njit kernels: arrays in, arrays out, one prange iteration per run.

Kernels know nothing of files, Dask or configs; the public functions validate and prepare.
"""
