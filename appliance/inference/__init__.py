"""Model packages, preprocessing and (later) backends, pipeline and worker.

Nothing in this package may import torch or ``training``: the appliance runs models
from signed packages with ONNX Runtime or OpenVINO only.
"""
