#!/usr/bin/env bash
# Packs a relocatable Python environment for clusters whose nodes lack the packages.
#
#   cluster/pack-env.sh [--output build/env.tar.gz] [PIP REQUIREMENT ...]
#
# Default requirement: this project with its dependencies ('.[tfos]'), i.e.
# TensorFlow, tf-keras, pyspark, pyarrow, ... (about 2.5 GB unpacked). The archive
# is a venv packed by venv-pack; ship it with the job and executors run Python
# from it:
#
#   ./spark-submit.sh mnist --master yarn --packed-env build/env.tar.gz -- --num-workers 4
#
# which adds --archives build/env.tar.gz#env and spark.pyspark.python=./env/bin/python.
# Build it on the same OS and CPU architecture as the cluster nodes, with the same
# Python minor version (venv-pack does not relocate the interpreter itself).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
output="$here/build/env.tar.gz"
if [[ ${1:-} == --output ]]; then output=$2; shift 2; fi
requirements=("$@")
((${#requirements[@]})) || requirements=("$here[tfos]")
python=${PYTHON:-python3}

venv=$(mktemp -d "${TMPDIR:-/tmp}/tfos-pack-XXXXXX")
trap 'rm -rf "$venv"' EXIT
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${requirements[@]}" venv-pack
mkdir -p "$(dirname "$output")"
rm -f "$output"
"$venv/bin/venv-pack" --prefix "$venv" --output "$output" --quiet
echo "packed $(du -h "$output" | cut -f1) environment into $output ($("$venv/bin/python" --version))"
