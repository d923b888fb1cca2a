"""The quickstart's digits model (configs/small/digits.py), class-conditional: the 10 digit classes and the null
label, trained with label dropout 0.1, so that one network gives the conditional and the unconditional score for
classifier-free guidance (`score-sde sample --class-label K --guidance-weight W`)."""

from configs.small import digits


def get_config():
    config = digits.get_config()
    config.model.num_classes = 10
    config.training.label_dropout = 0.1
    return config
