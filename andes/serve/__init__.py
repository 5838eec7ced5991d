"""The served app: engine replicas and the OpenAI-compatible gateway on Ray Serve.

Ray and FastAPI are imported only by ``replica``, ``gateway`` and ``app``; ``host`` and
``protocol`` are plain Python (the engine host and the wire format), tested without Ray.
This package imports nothing on its own, so ``import andes.serve.protocol`` stays cheap.
"""
