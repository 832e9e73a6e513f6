"""The BLAS thread limits the package sets, through one cached threadpoolctl controller."""

from threadpoolctl import ThreadpoolController

_controller = None


def blas_limit(num_threads):
    """A context in which BLAS runs on at most ``num_threads`` threads (None: as it is)."""
    global _controller
    if _controller is None:  # finding the libraries costs ~ms: do it once
        _controller = ThreadpoolController()
    return _controller.limit(limits=num_threads, user_api="blas")
