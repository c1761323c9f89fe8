#!/usr/bin/env bash
# Spark GPU discovery script: prints this host's GPUs as Spark's resource JSON,
#   {"name": "gpu", "addresses": ["0", "1", ...]}
# Point spark.worker.resource.gpu.discoveryScript (standalone) or
# spark.executor.resource.gpu.discoveryScript (YARN, Kubernetes) at it.
# Prints no addresses (and exits 0) on a host without NVIDIA GPUs.
set -euo pipefail
addresses=""
if command -v nvidia-smi >/dev/null 2>&1; then
  addresses=$(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null | sed 's/ //g; s/.*/"&"/' | paste -sd, -)
fi
echo "{\"name\": \"gpu\", \"addresses\": [${addresses}]}"
