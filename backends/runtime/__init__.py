"""The torch/diffusers runtime that every local pipeline backend shares (no task logic here).

One module per job; none imports torch or diffusers at import time (each helper imports what
it needs when called), so the daemon can import ``backends`` cheaply:

- :mod:`~backends.runtime.imports`    lazy imports; a missing package -> BackendMissing + pip line
- :mod:`~backends.runtime.extras`     the packages each task needs beyond torch and diffusers
- :mod:`~backends.runtime.hub`        Hugging Face cache, offline mode, "weights not here" messages
- :mod:`~backends.runtime.loading`    ``from_pretrained`` with dtype, variant, revision, LoRAs, tiling
- :mod:`~backends.runtime.sharing`    pipelines of several tasks sharing one base model's modules
- :mod:`~backends.runtime.compiling`  the ``compile`` option (torch.compile with a fallback)
- :mod:`~backends.runtime.placement`  device, CPU offload, and the out-of-memory ladder
- :mod:`~backends.runtime.errors`     library exceptions -> the :mod:`backends.base` error tree
- :mod:`~backends.runtime.memory`     device memory, the model cache budget, eviction planning
"""
