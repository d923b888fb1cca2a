"""Data: uint8 image sources and the batches that training and evaluation read.

  sources.py   get_source(config, split) -> a random-access source of uint8 images and int labels
  images.py    the official crops and resizes, on uint8 images
  pipeline.py  training batches (deterministic in (config.seed, step), resumable, sharded by host,
               prefetched), one in-order evaluation pass, the data scaler and its inverse

Typical use, on every host:

  source = get_source(config, "train")
  for step, batch in enumerate(train_batches(source, config, start_step=step0), start=step0):
      ...  # batch["image"] float32 (B / process_count, H, W, C), batch["label"] int32

  # One pass over the test split, last batch padded and masked; uint8=True for raw pixels (FID
  # statistics), dequantize=True (with repeat=r for the r-th pass) for bits/dim.
  for batch in eval_batches(get_source(config, "test"), config.eval.batch_size, config):
      ...  # batch["image"], batch["label"], batch["mask"] bool

The training loop's loss on the test split, with the training augmentation as in the official code, is
`train_batches(get_source(config, "test"), config, start_step=step)`: deterministic in the step too.
"""

from score_sde.data.pipeline import (
    eval_batches,
    eval_dataset,
    get_data_inverse_scaler,
    get_data_scaler,
    host_rows,
    train_batches,
    train_dataset,
)
from score_sde.data.sources import (
    DATASETS,
    ArraySource,
    FolderSource,
    ImageSource,
    TfdsSource,
    TFRecordSource,
    get_source,
)

__all__ = [
    "DATASETS",
    "ArraySource",
    "FolderSource",
    "ImageSource",
    "TFRecordSource",
    "TfdsSource",
    "eval_batches",
    "eval_dataset",
    "get_data_inverse_scaler",
    "get_data_scaler",
    "get_source",
    "host_rows",
    "train_batches",
    "train_dataset",
]
