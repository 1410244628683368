"""rd-engine: temporally consistent video depth (RollingDepth) as an inference engine."""

from rd_engine.version import __version__

__all__ = ["Engine", "FastPaths", "__version__"]


def __getattr__(name):
    # keep `import rd_engine` light: torch/diffusers load only when the API is used
    if name == "Engine":
        from rd_engine.api import Engine

        return Engine
    if name == "FastPaths":
        from rd_engine.backends.fast import FastPaths

        return FastPaths
    raise AttributeError(name)
