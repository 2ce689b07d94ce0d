"""Small triage CNNs in plain torch, each giving a score and a class-activation map.

:class:`TriageNet`: a stack of conv-BN-ReLU stages (stride-2 downsampling), then a 1x1
convolution to one channel: the class-activation map (CAM) in logit units at 1/8 of the
input size (1/16 with a fourth downsampling stage, for larger inputs). The image logit
pools the CAM with log-sum-exp (a smooth maximum, so small findings are not averaged
away) and the score is its sigmoid. Outputs, in this order (the ONNX export keeps them):
``score`` (N,) probability, ``cam`` (N, S/8, S/8) (or S/16).
"""

from __future__ import annotations

import torch
from torch import nn

LSE_SHARPNESS = 12.0


def _stage(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class TriageNet(nn.Module):
    """Binary triage CNN with a CAM head.

    Parameters
    ----------
    in_channels : int
        Input channels (3 CT windows, or 1 for a radiograph).
    widths : tuple of int
        Channels of the stages.
    downsamplings : int
        How many of the first stages halve the resolution: the CAM is ``2**downsamplings``
        times smaller than the input.
    """

    def __init__(self, in_channels: int, widths: tuple[int, ...] = (16, 32, 48, 64), downsamplings: int = 3):
        super().__init__()
        if not 1 <= downsamplings <= len(widths):
            raise ValueError(f"downsamplings must be 1-{len(widths)} for {len(widths)} stages, got {downsamplings}")
        strides = (2,) * downsamplings + (1,) * (len(widths) - downsamplings)
        layers, c = [], in_channels
        for w, s in zip(widths, strides):
            layers.append(_stage(c, w, s))
            c = w
        self.features = nn.Sequential(*layers)
        self.cam_head = nn.Conv2d(c, 1, 1)
        self.config = {"in_channels": in_channels, "widths": list(widths), "downsamplings": downsamplings}
        self.stride = 2 ** downsamplings

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cam = self.cam(x)
        return torch.sigmoid(pooled_logit(cam)), cam

    def cam(self, x: torch.Tensor) -> torch.Tensor:
        """The class-activation map, (N, S/stride, S/stride) logits."""
        return self.cam_head(self.features(x))[:, 0]

    def logit(self, x: torch.Tensor) -> torch.Tensor:
        """Image logit, for training with a logits loss."""
        return pooled_logit(self.cam(x))


def pooled_logit(cam: torch.Tensor) -> torch.Tensor:
    """Log-sum-exp pooling of a (N, H, W) CAM into (N,) logits: ``log(mean(exp(r*cam))) / r``.

    Written with max/exp/mean/log (numerically stable) rather than ``torch.logsumexp``,
    whose ONNX ``ReduceLogSumExp`` OpenVINO's ONNX reader reduces over every axis.
    """
    z = LSE_SHARPNESS * cam.flatten(1)
    peak = z.amax(dim=1, keepdim=True)
    return (peak[:, 0] + torch.log(torch.exp(z - peak).mean(dim=1))) / LSE_SHARPNESS


def build_model(config: dict) -> TriageNet:
    """Rebuild a model from its ``config`` dict (as saved with the weights)."""
    return TriageNet(config["in_channels"], tuple(config["widths"]), config.get("downsamplings", 3))
