#!/usr/bin/env bash
# Reproduces one experiment of the paper end to end: train, 50,000 samples, FID, test bits/dim.
#
#   bash experiments/paper.sh NAME [WORKDIR] [--config.FIELD=VALUE ...]
#
# Every stage resumes where it stopped when the script is run again (training from its last checkpoint,
# sampling after its last complete shard), so it can be restarted after a preemption as it is.
# FID needs reference statistics of the training images: set FID_REF to a statistics file (from
# `score-sde fid-stats`, or the official cifar10_stats.npz) or to a folder / .npz of the images.
set -euo pipefail
cd "$(dirname "$0")/.."

name=${1:?"usage: $0 NAME [WORKDIR] [--config.FIELD=VALUE ...]; NAME is one of the cases below"}
workdir=${2:-runs/$name}
shift $(( $# >= 2 ? 2 : 1 ))

case $name in
  cifar10_ve_deep)    config=configs/ve/cifar10_ncsnpp_deep_continuous.py ;;      # FID 2.20, IS 9.89
  cifar10_ve)         config=configs/ve/cifar10_ncsnpp_continuous.py ;;
  cifar10_vp_deep)    config=configs/vp/cifar10_ddpmpp_deep_continuous.py ;;
  cifar10_vp)         config=configs/vp/cifar10_ddpmpp_continuous.py ;;
  cifar10_subvp_deep) config=configs/subvp/cifar10_ddpmpp_deep_continuous.py ;;  # 2.99 bits/dim
  cifar10_subvp)      config=configs/subvp/cifar10_ddpmpp_continuous.py ;;
  celeba)             config=configs/ve/celeba_ncsnpp.py ;;
  celebahq_256)       config=configs/ve/celebahq_256_ncsnpp_continuous.py ;;
  celebahq_1024)      config=configs/ve/celebahq_ncsnpp_continuous.py ;;
  ffhq_256)           config=configs/ve/ffhq_256_ncsnpp_continuous.py ;;
  ffhq_1024)          config=configs/ve/ffhq_ncsnpp_continuous.py ;;
  bedroom)            config=configs/ve/bedroom_ncsnpp_continuous.py ;;
  church)             config=configs/ve/church_ncsnpp_continuous.py ;;
  *) echo "unknown experiment $name" >&2; exit 2 ;;
esac

score_sde=(python -m score_sde)
"${score_sde[@]}" train --config "$config" --workdir "$workdir" "$@"
"${score_sde[@]}" sample --model "$workdir" --out "$workdir/samples" --num-samples 50000 "$@"
if [[ -n ${FID_REF:-} ]]; then
  "${score_sde[@]}" fid "$workdir/samples" "$FID_REF"
else
  echo "FID_REF is not set: skipping FID (score-sde fid $workdir/samples REFERENCE)" >&2
fi
case $name in  # bits/dim: 5 passes over the test split, each with fresh dequantisation noise, as the official run_lib
  cifar10_*) "${score_sde[@]}" likelihood --model "$workdir" --split test --num-repeats 5 "$@" ;;
esac
