"""Triton kernels and their torch references (installed as `curate.kernels`).

Nothing here imports from `curate`: kernels are the lowest layer.
"""
