#!/usr/bin/env bash
# An EC2 Spark cluster for this project, through flintrock.
#
#   cluster/ec2.sh launch                       render cluster/flintrock.yaml, launch the cluster
#   cluster/ec2.sh bootstrap                    install Python 3.11, tfos_lib and its dependencies on every node
#   cluster/ec2.sh submit JOB [-- job options]  run ./spark-submit.sh JOB on the master, against the cluster
#   cluster/ec2.sh destroy                      terminate every instance of the cluster
#   cluster/ec2.sh --dry-run COMMAND ...        print the commands instead of running them
#
# Environment: EC2_KEY_NAME, EC2_IDENTITY_FILE, EC2_REGION, EC2_AMI (required),
# EC2_INSTANCE_TYPE (m5.xlarge), TFOS_NUM_WORKERS (2), TFOS_CLUSTER_NAME (tfos).
# AWS credentials come from the usual places (environment, ~/.aws); flintrock
# must be installed (pip install flintrock).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dry_run=0
if [[ ${1:-} == --dry-run ]]; then dry_run=1; shift; fi
command=${1:-}
[[ -n $command ]] && shift
name=${TFOS_CLUSTER_NAME:-tfos}
build=${TFOS_BUILD_DIR:-$here/build}  # another folder keeps concurrent runs apart
config="$build/flintrock.yaml"
remote_dir=/home/ec2-user/tfos
python=python3.11

run() {
  if ((dry_run)); then printf '%q ' "$@"; echo; else "$@"; fi
}

render_config() {
  local missing=()
  for var in EC2_KEY_NAME EC2_IDENTITY_FILE EC2_REGION EC2_AMI; do
    [[ -n ${!var:-} ]] || missing+=("$var")
  done
  if ((${#missing[@]})); then
    echo "error: set ${missing[*]} (see the header of cluster/flintrock.yaml)" >&2
    exit 2
  fi
  export EC2_INSTANCE_TYPE=${EC2_INSTANCE_TYPE:-m5.xlarge} TFOS_NUM_WORKERS=${TFOS_NUM_WORKERS:-2}
  mkdir -p "$build"
  python3 - "$here/cluster/flintrock.yaml" "$config" <<'PY'
import os, re, sys
text = open(sys.argv[1]).read()
body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
rendered = re.sub(r"\$\{(\w+)\}", lambda m: os.environ[m.group(1)], body)
tmp = f"{sys.argv[2]}.{os.getpid()}.tmp"  # renamed into place: a reader never sees half a file
with open(tmp, "w") as out:
    out.write(rendered + "\n")
os.replace(tmp, sys.argv[2])
PY
}

# The wheel's name carries the version, which lives in pyproject.toml only.
wheel="tfos_lib-$(sed -n 's/^version = "\(.*\)"/\1/p' "$here/pyproject.toml")-py3-none-any.whl"

package() {
  # The wheel of tfos_lib plus the files the master needs to submit jobs.
  run python3 -m pip wheel --no-deps --quiet "$here" -w "$here/build/dist"
  run tar -czf "$here/build/tfos-project.tar.gz" -C "$here" jobs conf cluster spark-submit.sh setup.py pyproject.toml
}

case $command in
  launch)
    render_config
    run flintrock --config "$config" launch "$name"
    ;;
  bootstrap)
    render_config
    package
    run flintrock --config "$config" run-command "$name" \
      "sudo dnf install -y $python $python-pip && mkdir -p $remote_dir"
    run flintrock --config "$config" copy-file "$name" "$here/build/dist/$wheel" "$remote_dir/"
    # Same pyspark major version as the cluster's Spark; TensorFlow and friends from PyPI.
    run flintrock --config "$config" run-command "$name" \
      "$python -m pip install --user '$remote_dir/$wheel[tfos]'"
    run flintrock --config "$config" copy-file --master-only "$name" "$here/build/tfos-project.tar.gz" "$remote_dir/"
    run flintrock --config "$config" run-command --master-only "$name" \
      "cd $remote_dir && tar -xzf tfos-project.tar.gz"
    ;;
  submit)
    job=${1:?usage: $0 submit JOB [-- job options]}
    shift
    render_config
    [[ ${1:-} == -- ]] && shift
    run flintrock --config "$config" run-command --master-only "$name" \
      "cd $remote_dir && SPARK_HOME=\$HOME/spark PYSPARK_PYTHON=$python ./spark-submit.sh $job --master spark://\$(hostname -f):7077 --profile ec2 -- $*"
    ;;
  destroy)
    render_config
    run flintrock --config "$config" destroy "$name" --assume-yes
    ;;
  *)
    echo "usage: $0 [--dry-run] launch | bootstrap | submit JOB [-- job options] | destroy" >&2
    exit 2
    ;;
esac
