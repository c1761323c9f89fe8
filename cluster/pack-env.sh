#!/usr/bin/env bash
# Packs a relocatable Python environment for clusters whose nodes lack the packages.
#
#   cluster/pack-env.sh [--output build/env.tar.gz] [PIP REQUIREMENT ...]
#   cluster/pack-env.sh [--output build/env.tar.gz] --from-installed DISTRIBUTION ...
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
#
# --from-installed packs the named distributions (and what they require) as this
# Python has them installed, copied file by file from its site-packages: no package
# index is needed (offline machines, CI). The venv's python links to this Python's
# interpreter, which must be at the same path on the nodes.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
output="$here/build/env.tar.gz"
if [[ ${1:-} == --output ]]; then output=$2; shift 2; fi
from_installed=0
if [[ ${1:-} == --from-installed ]]; then from_installed=1; shift; (($#)) || { echo "--from-installed needs distribution names" >&2; exit 2; }; fi
requirements=("$@")
((${#requirements[@]})) || requirements=("$here[tfos]")
python=${PYTHON:-python3}

venv=$(mktemp -d "${TMPDIR:-/tmp}/tfos-pack-XXXXXX")
trap 'rm -rf "$venv"' EXIT
if ((from_installed)); then
  "$python" -m venv --without-pip "$venv"
  mkdir -p "$(dirname "$output")"
  "$python" - "$venv" "$output" "${requirements[@]}" <<'PY'
import importlib.metadata as metadata, os, re, shutil, sys, sysconfig, tarfile
venv, output, wanted = sys.argv[1], sys.argv[2], sys.argv[3:]
site = sysconfig.get_paths(vars={"base": venv, "platbase": venv})["purelib"]
done = set()
while wanted:
    requirement = wanted.pop()
    name = re.split(r"[<>=!~; \[(]", requirement)[0].strip().lower().replace("_", "-")
    if name in done:
        continue
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        if ";" in requirement:  # a dependency for other platforms or Pythons
            continue
        sys.exit(f"{name} is not installed in {sys.executable}; install it, or pack without --from-installed")
    done.add(name)
    for file in dist.files or []:
        if str(file).startswith(".."):  # scripts outside site-packages
            continue
        source = dist.locate_file(file)
        if source.is_file():
            target = os.path.join(site, str(file))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy2(source, target)
    wanted += [r for r in dist.requires or [] if "extra ==" not in r]
with tarfile.open(output + ".tmp", "w:gz", compresslevel=1) as tar:
    tar.add(venv, arcname=".")
os.replace(output + ".tmp", output)
print(f"copied {len(done)} installed distributions: {', '.join(sorted(done))}")
PY
  echo "packed $(du -h "$output" | cut -f1) environment into $output ($("$venv/bin/python" --version), from installed packages)"
  exit 0
fi
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${requirements[@]}" venv-pack
mkdir -p "$(dirname "$output")"
rm -f "$output"
"$venv/bin/venv-pack" --prefix "$venv" --output "$output" --quiet
echo "packed $(du -h "$output" | cut -f1) environment into $output ($("$venv/bin/python" --version))"
