"""Triton kernels, installed as ``ditto_fast.kernels``.

Each kernel module imports Triton itself, so importing this package never requires Triton;
on the CPU the kernels run under ``TRITON_INTERPRET=1`` for testing.
"""
