"""CIFAR-10 defaults (32x32 RGB): what every CIFAR-10 experiment starts from."""

from configs.common import base_config


def get_default_configs():
    return base_config()  # the base values are the CIFAR-10 ones
