"""windtunnel: predict and plan a large LM training run from many small µP runs (MiniCPM's model wind tunnel).

Heavy libraries (torch, mlflow, ray, optuna, matplotlib) are imported by the modules that need them,
so `import windtunnel` stays fast.
"""

from windtunnel.errors import SpecError, WindtunnelError

__all__ = ["WindtunnelError", "SpecError", "__version__"]
__version__ = "0.1.0"
