"""Element loops for copying arrays inside kernels.

``dst[...] = src`` with an array ``src`` makes Numba compile its shape-mismatch error path,
whose message formatting (``str`` of shape tuples, joins, reprs) costs about two seconds of
compile time per kernel on a cold cache and nothing at run time. The kernels copy arrays of
known equal shapes with these loops instead.
"""

from numba import njit

from .options import JIT


@njit(inline="always", **JIT)
def copy_into(dst, src):
    """``dst[...] = src`` for C-contiguous arrays of the same shape."""
    d = dst.reshape(dst.size)
    s = src.reshape(src.size)
    for k in range(s.shape[0]):
        d[k] = s[k]


@njit(inline="always", **JIT)
def axpy_into(out, x, a, y):
    """``out[...] = x + a * y`` for C-contiguous arrays of the same shape."""
    o = out.reshape(out.size)
    xs = x.reshape(x.size)
    ys = y.reshape(y.size)
    for k in range(xs.shape[0]):
        o[k] = xs[k] + a * ys[k]


__all__ = ["copy_into", "axpy_into"]
