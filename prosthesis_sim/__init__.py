"""prosthesis-sim: a closed-loop visual prosthesis simulator (image -> generated M/EEG -> decoder ->
phosphenes -> score). ``import prosthesis_sim as psim`` gives the Python API (``prosthesis_sim.api``):
``psim.synthesize``, ``psim.load_dataset``, ``psim.encoder``, ``psim.decoder``, ``psim.phosphene``,
``psim.load``, ``psim.closed_loop``, ``psim.run_frames``, ``psim.train``, ``psim.batch_evaluate``,
``psim.config``.
They load on first use, so ``import prosthesis_sim`` itself stays cheap."""

__all__ = ["config", "synthesize", "load_dataset", "encoder", "decoder", "phosphene", "load", "closed_loop",
           "run_frames", "train", "batch_evaluate"]


def __getattr__(name):
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'prosthesis_sim' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *__all__])
