"""The served app: engine replicas and the OpenAI-compatible gateway on Ray Serve.

Ray is imported only by ``app``, ``gateway``, ``replica`` and ``router``, FastAPI only by
``gateway``, ``streaming`` and ``local``; ``host`` and ``protocol`` are plain Python (the engine
host and the wire format), tested without Ray or FastAPI.
This package imports nothing on its own, so ``import andes.serve.protocol`` stays cheap.
"""
