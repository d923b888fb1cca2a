"""EDM's CIFAR-10 unconditional model (Karras et al. 2022: FID 1.97 at 35 NFE): its VP network (DDPM++) with EDM's
preconditioning, loss and SDE."""

from configs.common import edm_cifar10
from configs.default_cifar10_configs import get_default_configs


def get_config():
    return edm_cifar10(get_default_configs(), arch="ddpmpp", num_classes=0)
