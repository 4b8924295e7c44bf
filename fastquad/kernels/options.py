"""The Numba compile options of every kernel, declared once.

Every ``@njit`` in fastquad takes one of these sets, so a kernel's floating-point contract is
named where it is compiled. All are cached on disk (``NUMBA_CACHE_DIR``) and release the GIL.
No set assumes no-NaN or no-inf: divergence is detected by NaN and inf being seen.
"""

#: Exact IEEE arithmetic, in program order: the random streams, the closed forms, the ODE
#: stepping, anything whose bits are part of the reproducibility contract.
JIT = dict(cache=True, nogil=True, fastmath=False)

#: Dot products and rank-1 updates that LLVM may reassociate and contract (fused multiply-add)
#: to vectorise them: the kernels' FLOPs. The result is still a fixed function of one run's own
#: data (same code, same order whatever the batch or thread count), so it is reproducible.
FAST = dict(cache=True, nogil=True, fastmath={"reassoc", "contract", "nsz"})

#: The ODE right-hand side: a handful of length-K and length-M dot products. Reordering their
#: sums lets LLVM vectorise them and fused multiply-adds help again (together 2.5x at K = 16);
#: signed zeros are kept.
RHS = dict(JIT, fastmath={"reassoc", "contract"})

#: IEEE arithmetic without Python's division-by-zero check (``error_model="numpy"``), a branch
#: that stops vectorisation: for the exact sampler's lockstep lanes, whose every divisor is
#: non-zero by construction.
NUMPY_ERRORS = dict(JIT, error_model="numpy")

__all__ = ["JIT", "FAST", "RHS", "NUMPY_ERRORS"]
