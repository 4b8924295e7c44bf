"""What became of a run, as the kernels record it (``Result.status``, the files' ``status``)."""

#: The run reached t_max.
STATUS_DONE = 0
#: Its state became non-finite or its eps_g exceeded ``max_error``; ``t_stop`` says when.
STATUS_DIVERGED = 1
#: It could not be computed (an adaptive ODE that met no step size, a sweep task that raised).
STATUS_FAILED = 2

__all__ = ["STATUS_DONE", "STATUS_DIVERGED", "STATUS_FAILED"]
