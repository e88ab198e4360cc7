"""The real-node fixtures (node, gpu_image, operator, restricted, models), for every test module of this directory.

They are defined next to the first real-node tests, in test_real_node.py; importing them here shares them.
"""

from .test_real_node import gpu_image, models, node, operator, restricted

__all__ = ["gpu_image", "models", "node", "operator", "restricted"]
