"""Phosphene models: what a prosthesis user would see for a grey image (``PhospheneModel``).

- ``Pulse2PerceptModel`` (p2p.py): any pulse2percept 0.11 model and implant, retinal or cortical.
- ``TorchPhospheneModel`` (torch_renderer.py): our own scoreboard renderer, one matrix product per
  percept, batched, CPU or CUDA, fp16, differentiable; optional temporal dynamics (temporal.py).
- field.py: electrode positions in the visual field and the field box, shared by both.
- implants.py: implants pulse2percept builds from parts (a grid of Neuralink threads).
Configs: configs/phosphene/*.yaml; docs/phosphenes.md.
"""
from prosthesis_sim.phosphenes.p2p import Pulse2PerceptModel, default_cache_dir
from prosthesis_sim.phosphenes.torch_renderer import TorchPhospheneModel

__all__ = ["Pulse2PerceptModel", "TorchPhospheneModel", "default_cache_dir"]
