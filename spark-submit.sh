#!/usr/bin/env bash
# Runs one job of this project with spark-submit.
#
#   ./spark-submit.sh <job> [spark-submit options] [-- job options]
#
#   ./spark-submit.sh mnist
#   ./spark-submit.sh mnist --master 'local-cluster[2,1,2048]' -- --num-workers 2
#   ./spark-submit.sh mnist --profile local -- --model logreg --epochs 5
#   ./spark-submit.sh mnist --master yarn --profile yarn+gpu -- --num-workers 4
#
# It finds jobs/<job>.py, packs tfos_lib into build/tfos_lib.zip for the executors
# (--py-files; without this wrapper: python -m tfos_lib.pack build/tfos_lib.zip), applies a Spark profile from conf/ (--profile NAME, or chosen from
# --master: local[...] -> local, local-cluster[...] -> local-cluster, spark:// ->
# standalone, yarn -> yarn, k8s:// -> k8s), and makes
# every Python process use legacy Keras (TF_USE_LEGACY_KERAS=1).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
jobs=$(cd "$here/jobs" && ls -1 ./*.py | sed 's|^\./||; s|\.py$||' | grep -v '^__init__$' | tr '\n' ' ')
if [[ $# -lt 1 || $1 == -h || $1 == --help ]]; then
  echo "usage: $0 <job> [spark-submit options] [-- job options]   (jobs: $jobs)" >&2
  exit 2
fi
job=$1
shift
# A job name, or the path of any PySpark script (run with the same profiles and shipping).
if [[ $job == *.py && -f $job ]]; then script=$(cd "$(dirname "$job")" && pwd)/$(basename "$job"); else script="$here/jobs/$job.py"; fi
if [[ ! -f $script ]]; then
  echo "error: no job named '$job' (expected $script). Jobs: $jobs" >&2
  exit 2
fi

spark_args=()
job_args=()
profile=""
master=""
packed_env=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --) shift; job_args=("$@"); break ;;
    --profile) profile=$2; shift 2 ;;
    --profile=*) profile=${1#--profile=}; shift ;;
    --packed-env) packed_env=$2; shift 2 ;;
    --master) master=$2; spark_args+=("$1" "$2"); shift 2 ;;
    --master=*) master=${1#--master=}; spark_args+=("$1"); shift ;;
    *) spark_args+=("$1"); shift ;;
  esac
done
if [[ -z $profile ]]; then
  case $master in
    local-cluster*) profile=local-cluster ;;
    ""|local*) profile=local ;;
    spark://*) profile=standalone ;;
    yarn) profile=yarn ;;
    k8s://*) profile=k8s ;;
    *)
      echo "error: no profile matches --master $master; pass --profile NAME (one of: $(cd "$here/conf" && ls -1 ./*.conf | sed 's|^\./||; s|\.conf$||' | tr '\n' ' '))" >&2
      exit 2 ;;
  esac
fi
# A profile may stack overlays: --profile standalone+gpu+security (later files win).
# Generated files go to build/ (TFOS_BUILD_DIR elsewhere: runs started together then never share them).
build=${TFOS_BUILD_DIR:-$here/build}
mkdir -p "$build"
properties="$build/spark-${profile//+/-}.conf"
stacked="$properties.$$.tmp"
: >"$stacked"
IFS=+ read -r -a parts <<<"$profile"
for part in "${parts[@]}"; do
  if [[ ! -f $here/conf/$part.conf ]]; then
    echo "error: no Spark profile '$part' (expected $here/conf/$part.conf); profiles: $(cd "$here/conf" && ls -1 ./*.conf | sed 's|^\./||; s|\.conf$||' | tr '\n' ' ')" >&2
    exit 2
  fi
  # ${TFOS_HOME} in a profile stands for this checkout (e.g. the GPU discovery script).
  sed "s|\${TFOS_HOME}|$here|g" "$here/conf/$part.conf" >>"$stacked"
done
mv "$stacked" "$properties"

if ! command -v java >/dev/null 2>&1 && [[ -z ${JAVA_HOME:-} ]]; then
  echo "error: Java not found. Spark 4 needs Java 17 or newer: install it (e.g. apt-get install openjdk-17-jre-headless) or set JAVA_HOME." >&2
  exit 1
fi
python=${PYSPARK_PYTHON:-$(command -v python3 || command -v python)}
if ! "$python" -c "import pyspark, tfos_lib" 2>/dev/null; then
  echo "error: $python cannot import pyspark and tfos_lib; install them first: $python -m pip install -e '$here'" >&2
  exit 1
fi
submit=${SPARK_HOME:+$SPARK_HOME/bin/spark-submit}
if [[ -z $submit ]]; then
  submit="$("$python" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')/bin/spark-submit"
fi

# Executors import tfos_lib from this zip, so a cluster needs only the third-party
# packages installed (or shipped as a packed environment, see cluster/pack-env.sh).
# Written to a temporary name and renamed: jobs started at the same time never read half a zip.
PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" "$python" -m tfos_lib.pack "$build/tfos_lib.zip" "$here/tfos_lib" >/dev/null
export TF_USE_LEGACY_KERAS=1
export PYSPARK_DRIVER_PYTHON=${PYSPARK_DRIVER_PYTHON:-$python}
# This Python for the executors only where they run on this host (local, local-cluster, a standalone
# master on this host), and never over a profile's own spark.pyspark.python (yarn, ec2): elsewhere the
# executors use their hosts' Python (Spark's default or the site's spark-defaults.conf).
executor_python=()
local_master=false
case $master in ""|local*|spark://localhost*|spark://127.0.0.1*|"spark://$(hostname)"*) local_master=true ;; esac
if [[ $local_master == true ]] && ! grep -q '^spark.pyspark.python[[:space:]]' "$properties"; then
  executor_python=(--conf "spark.pyspark.python=$python")
  export PYSPARK_PYTHON=$python
fi
if [[ -n $packed_env ]]; then
  if [[ ! -f $packed_env ]]; then
    echo "error: --packed-env $packed_env does not exist; build it with cluster/pack-env.sh" >&2
    exit 2
  fi
  # Executors unpack the archive into ./env of their working directory and run Python from it.
  executor_python=(--archives "$packed_env#env" --conf spark.pyspark.python=./env/bin/python)
fi
# --load-spark-defaults: the site's conf/spark-defaults.conf still applies (Spark 4 skips it when
# --properties-file is given); the profile's settings take precedence over it.
driver_python=()
[[ $local_master == true ]] && driver_python=(--conf "spark.pyspark.driver.python=$python")
exec "$submit" \
  --properties-file "$properties" \
  --load-spark-defaults \
  --py-files "$build/tfos_lib.zip" \
  --conf spark.executorEnv.TF_USE_LEGACY_KERAS=1 \
  "${driver_python[@]}" \
  --driver-java-options "-Dlog4j2.configurationFile=file:$here/conf/log4j2.properties" \
  "${executor_python[@]}" \
  "${spark_args[@]}" \
  "$script" "${job_args[@]}"
