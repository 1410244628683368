"""rd-engine: temporally consistent video depth (RollingDepth) as an inference engine."""

__version__ = "0.1.0"


def __getattr__(name):
    # keep `import rd_engine` light: torch/diffusers load only when the API is used
    if name == "Engine":
        from rd_engine.api import Engine

        return Engine
    raise AttributeError(name)
