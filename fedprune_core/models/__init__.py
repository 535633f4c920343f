"""Models as layer tables (table.py, no torch), the zoo (zoo.py) and their torch side (net.py)."""

from .table import Layer, ModelSpec, ParamSpec
from .zoo import MODELS, model_spec

__all__ = ["Layer", "ModelSpec", "ParamSpec", "MODELS", "model_spec"]
