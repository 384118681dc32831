"""Client for softmaxd: softmax, its backward pass, Jacobian and cross-entropy over gRPC.

    >>> from softmaxd_client import Client
    >>> with Client("localhost:50051") as c:
    ...     probs = c.forward(np.array([[1.0, 2.0, 3.0]], dtype=np.float32))
"""

from ._aio import AsyncClient
from ._calls import CrossEntropy
from ._client import Client
from ._errors import SoftmaxError

__all__ = ["AsyncClient", "Client", "CrossEntropy", "SoftmaxError"]
__version__ = "0.1.0"
