"""The objective of an autoencoder run (Rombach et al. 2022, appendix G; CompVis' `LPIPSWithDiscriminator` less the
perceptual and adversarial terms): a reconstruction loss per pixel, a small KL of the posterior to N(0, I) per pixel,
optionally 1 - SSIM, and optionally, after `disc_start` steps, a patch discriminator's hinge loss.

    loss = rec(x, x_hat) + kl_weight * KL(q(z | x) || N(0, I)) / (C H W) + ssim_weight * (1 - SSIM(x, x_hat))
           [+ disc_weight * -D(x_hat)]

rec is |x - x_hat| (l1) or (x - x_hat)^2 (l2), averaged over pixels; KL is summed over the latent and divided by the
image's pixels, so that kl_weight keeps CompVis' meaning (their reconstruction term is a sum over pixels, their KL a
sum over the latent: the ratio is the same). No LPIPS: its VGG backbone's weights cannot be had offline here. The
discriminator's weight is fixed (CompVis scales it by a ratio of gradient norms at the decoder's last layer; not here).
"""

import torch
import torch.nn.functional as F

from .options import AutoencoderOptions

SSIM_WINDOW, SSIM_SIGMA = 11, 1.5  # Wang et al. 2004


def kl_to_standard_normal(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) of each image's posterior, summed over the latent `[N x c x h x w]`; [N]."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(dim=1)


def gaussian_window(channels: int, size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """A normalised 2D Gaussian window, one per channel: `[channels x 1 x size x size]` for a grouped convolution."""
    offsets = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(offsets**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """
    SSIM (Wang et al. 2004, eq. 13) of each image pair `[N x C x H x W]` in [-1, 1], with a Gaussian window over the
    positions where it fits (no padding), averaged over positions and channels; [N]. The images are mapped to [0, 1]
    first: the luminance term assumes intensities of one sign (around 0, an inverted image would score high).
    """
    x, y, data_range = (x + 1) / 2, (y + 1) / 2, 1.0
    channels = x.shape[1]
    window = gaussian_window(channels).to(device=x.device, dtype=x.dtype)
    size = min(SSIM_WINDOW, x.shape[-2], x.shape[-1])
    window = window[..., :size, :size] / window[..., :size, :size].sum(dim=(-2, -1), keepdim=True)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, window, groups=channels)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x, var_y = blur(x * x) - mu_x**2, blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    index = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return index.flatten(1).mean(dim=1)


def autoencoder_loss(
    x: torch.Tensor, x_hat: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor, o: AutoencoderOptions
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss of a micro-batch (a scalar, in float32) and its terms (detached), per the module docstring."""
    x, x_hat = x.float(), x_hat.float()
    error = x_hat - x
    reconstruction = (error.abs() if o.reconstruction_loss == "l1" else error.pow(2)).mean()
    kl = (kl_to_standard_normal(mean.float(), logvar.float()) / x[0].numel()).mean()
    loss = reconstruction + o.kl_weight * kl
    terms = {"reconstruction": reconstruction.detach(), "kl": kl.detach()}
    if o.ssim_weight > 0:
        structure = 1.0 - ssim(x, x_hat).mean()
        loss = loss + o.ssim_weight * structure
        terms["one_minus_ssim"] = structure.detach()
    return loss, terms


class PatchDiscriminator(torch.nn.Module):
    """
    A PatchGAN (Isola et al. 2017; CompVis' `NLayerDiscriminator`, with GroupNorm for BatchNorm so that no running
    statistics differ between ranks): images `[N x C x H x W]` -> a realness logit per patch `[N x 1 x h x w]`.
    """

    def __init__(self, channels: int, width: int = 32, layers: int = 2):
        super().__init__()
        blocks = [torch.nn.Conv2d(channels, width, 4, stride=2, padding=1), torch.nn.LeakyReLU(0.2)]
        for _ in range(1, layers):
            blocks += [
                torch.nn.Conv2d(width, 2 * width, 4, stride=2, padding=1),
                torch.nn.GroupNorm(8, 2 * width),
                torch.nn.LeakyReLU(0.2),
            ]
            width *= 2
        blocks.append(torch.nn.Conv2d(width, 1, 4, stride=1, padding=1))
        self.layers = torch.nn.Sequential(*blocks)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images)


def hinge_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """The discriminator's hinge loss (Lim & Ye 2017): mean(relu(1 - D(x))) + mean(relu(1 + D(x_hat)))."""
    return F.relu(1.0 - real_logits.float()).mean() + F.relu(1.0 + fake_logits.float()).mean()


def hinge_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """The autoencoder's adversarial term: -mean(D(x_hat))."""
    return -fake_logits.float().mean()
