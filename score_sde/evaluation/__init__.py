"""Sample quality: the FID Inception network in Flax, FID / KID / IS, reference statistics.

inception.py   Inception-v3 of the TF inception-2015-12-05 graph and its input pipeline
weights.py     PyTorch weight files -> JAX-native .npz, and loading it (no PyTorch needed)
features.py    InceptionFeatures: uint8 images -> pool3 features (and logits), sharded, streamed
metrics.py     frechet_distance / fid_from_features, kernel_distance (KID), inception_score
stats.py       streaming feature statistics and cached reference statistics with their record
images.py      uint8 image sets on disk (folders, .npz/.npy shards), image grids
compare.py     sampler comparison: a grid of samplers x step counts -> FID/KID vs NFE, resumable
commands.py    the convert-inception, fid-stats, fid and compare sub-commands as plain functions
"""
