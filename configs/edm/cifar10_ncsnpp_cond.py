"""EDM's CIFAR-10 class-conditional model (Karras et al. 2022: FID 1.79 at 35 NFE): its VE network (NCSN++) with
EDM's preconditioning, loss and SDE; trained with label dropout 0.1 for classifier-free guidance (EDM's own run
used none)."""

from configs.common import edm_cifar10
from configs.default_cifar10_configs import get_default_configs


def get_config():
    return edm_cifar10(get_default_configs(), arch="ncsnpp", num_classes=10)
