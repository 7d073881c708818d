"""Triton kernels, installed as ``ditto_fast.kernels``.

- ``grid_sample_3d``: the warp network's 5-D trilinear grid sample (torch's grid_sample with zeros
  padding, align_corners=False), fp16/fp32 input, fp32 arithmetic.
- ``paste_back``: decoder output → inverse-affine bilinear sample → mask blend → uint8 frame, in one
  pass, with OpenCV 4.x's fixed-point sample positions (byte-identical to the reference's put-back).
- ``ddim``: the LMDM sampler's DDIM update, bit-identical to the reference's float32 NumPy expression.

Each kernel module imports Triton itself, so importing this package never requires Triton. The
wrappers take CUDA tensors; on the CPU the kernels run only under ``TRITON_INTERPRET=1`` (set before
Triton is imported), which is how they are tested without a GPU.
"""
