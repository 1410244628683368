"""rd-engine: temporally consistent video depth (RollingDepth) as an inference engine."""

from rd_engine.version import __version__

__all__ = ["Engine", "FastPaths", "OutputOptions", "SequenceOptions", "StereoOptions", "render_stereo", "__version__"]

_LAZY = {
    "Engine": ("rd_engine.api", "Engine"),
    "FastPaths": ("rd_engine.backends.fast", "FastPaths"),
    "render_stereo": ("rd_engine.api", "render_stereo"),
    "OutputOptions": ("rd_engine.outputs.offline", "OutputOptions"),
    "SequenceOptions": ("rd_engine.io.sequence", "SequenceOptions"),
    "StereoOptions": ("rd_engine.outputs.stereo", "StereoOptions"),
}


def __getattr__(name):
    # keep `import rd_engine` light: torch/diffusers load only when the API is used
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(name)
