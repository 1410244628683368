"""rd-engine: temporally consistent video depth (RollingDepth) as an inference engine."""

__version__ = "0.1.0"
