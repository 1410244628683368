"""Custom kernels (Triton on CUDA) with plain PyTorch references beside them."""
