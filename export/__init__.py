"""ONNX export, TensorRT build and the engine manifest."""
