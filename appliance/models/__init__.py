"""Model packages: format and verification, the registry, qualification, backends.

Nothing here may import torch or ``training``: the appliance runs models from signed
packages with ONNX Runtime or OpenVINO only.
"""
