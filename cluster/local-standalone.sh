#!/usr/bin/env bash
# A real Spark standalone cluster on this host: one master and N workers on 127.0.0.1.
#
#   cluster/local-standalone.sh start N     start master + N workers, wait until all N registered
#   cluster/local-standalone.sh status      what is running
#   cluster/local-standalone.sh stop        stop exactly the processes `start` started
#
# The pip-installed pyspark has bin/spark-class but not sbin/start-master.sh, so
# the daemons are started with spark-class directly. Their pids and logs are kept
# in $TFOS_STANDALONE_DIR (default: /tmp/tfos-standalone-$USER), and `stop`
# kills only those pids. Settings (environment):
#   SPARK_MASTER_PORT (7077), SPARK_MASTER_WEBUI_PORT (8080); 0: the master binds a free
#   port itself (no race with other processes) and `start` prints the one it got,
#   TFOS_WORKER_CORES (1), TFOS_WORKER_MEMORY (2g), TFOS_START_TIMEOUT (60 s).
set -euo pipefail

state=${TFOS_STANDALONE_DIR:-/tmp/tfos-standalone-${USER:-$(id -un)}}
port=${SPARK_MASTER_PORT:-7077}
ui_port=${SPARK_MASTER_WEBUI_PORT:-8080}
cores=${TFOS_WORKER_CORES:-1}
memory=${TFOS_WORKER_MEMORY:-2g}
timeout=${TFOS_START_TIMEOUT:-60}
python=${PYSPARK_PYTHON:-$(command -v python3 || command -v python)}
master_url="spark://127.0.0.1:$port"

spark_home() {
  if [[ -n ${SPARK_HOME:-} ]]; then echo "$SPARK_HOME"; return; fi
  "$python" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))'
}

alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

registered_workers() {
  # The master's web UI serves its state as JSON; count the ALIVE workers.
  "$python" - "$ui_port" <<'PY' 2>/dev/null || echo 0
import json, sys, urllib.request
state = json.load(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/json/", timeout=2))
print(sum(1 for w in state.get("workers", []) if w.get("state") == "ALIVE"))
PY
}

start() {
  local n=${1:?usage: $0 start N}
  if ! [[ $n =~ ^[1-9][0-9]*$ ]]; then echo "error: N must be a positive number of workers; got '$n'" >&2; exit 2; fi
  if ! command -v java >/dev/null 2>&1 && [[ -z ${JAVA_HOME:-} ]]; then
    echo "error: Java not found; Spark 4 needs Java 17+ (apt-get install openjdk-17-jre-headless)" >&2; exit 1
  fi
  if alive "$state/master.pid"; then
    echo "error: a cluster started from $state is already running (master pid $(cat "$state/master.pid")); run '$0 stop' first" >&2
    exit 1
  fi
  rm -rf "$state"
  mkdir -p "$state"
  local class
  class="$(spark_home)/bin/spark-class"
  export SPARK_LOCAL_IP=127.0.0.1 SPARK_LOG_DIR="$state" TF_USE_LEGACY_KERAS=1
  nohup "$class" org.apache.spark.deploy.master.Master --host 127.0.0.1 --port "$port" --webui-port "$ui_port" \
    >"$state/master.log" 2>&1 &
  echo $! >"$state/master.pid"
  if [[ $port == 0 || $ui_port == 0 ]]; then  # the ports the master bound, from its log
    local bound=$((SECONDS + timeout))
    until grep -q "Starting Spark master at" "$state/master.log" && grep -q "Bound MasterWebUI" "$state/master.log"; do
      if ((SECONDS >= bound)) || ! alive "$state/master.pid"; then
        echo "error: the master did not report its ports within ${timeout} s; its log:" >&2
        tail -20 "$state/master.log" >&2
        stop
        exit 1
      fi
      sleep 0.5
    done
    master_url=$(grep -o "Starting Spark master at spark://[^ ]*" "$state/master.log" | head -1 | awk '{print $NF}')
    ui_port=$(grep -o "and started at http://[^ ]*" "$state/master.log" | head -1 | sed 's/.*://')
  fi
  for i in $(seq 1 "$n"); do
    # Each worker gets its own work dir; ports are left to the OS.
    nohup "$class" org.apache.spark.deploy.worker.Worker --host 127.0.0.1 --cores "$cores" --memory "$memory" \
      --work-dir "$state/work-$i" --webui-port 0 "$master_url" >"$state/worker-$i.log" 2>&1 &
    echo $! >"$state/worker-$i.pid"
  done
  local deadline=$((SECONDS + timeout)) count=0
  while ((SECONDS < deadline)); do
    count=$(registered_workers)
    if ((count >= n)); then
      echo "master: $master_url"
      echo "web UI: http://127.0.0.1:$ui_port"
      echo "workers: $n x ($cores cores, $memory); logs and pids in $state"
      return 0
    fi
    for pid_file in "$state"/*.pid; do
      if ! alive "$pid_file"; then
        echo "error: $(basename "$pid_file" .pid) exited during start-up; its log:" >&2
        tail -20 "${pid_file%.pid}.log" >&2
        stop
        exit 1
      fi
    done
    sleep 1
  done
  echo "error: only $count of $n workers registered with $master_url within ${timeout}s (TFOS_START_TIMEOUT); logs in $state" >&2
  stop
  exit 1
}

stop() {
  [[ -d $state ]] || { echo "nothing to stop ($state does not exist)"; return 0; }
  local pids=()
  # Workers first, so the master does not log them as lost.
  for pid_file in "$state"/worker-*.pid "$state"/master.pid; do
    if alive "$pid_file"; then pids+=("$(cat "$pid_file")"); fi
  done
  if ((${#pids[@]})); then
    kill "${pids[@]}" 2>/dev/null || true
    for _ in $(seq 1 20); do
      local left=()
      for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && left+=("$pid"); done
      ((${#left[@]})) || break
      sleep 0.5
    done
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  fi
  rm -f "$state"/*.pid
  echo "stopped ${#pids[@]} process(es) started from $state"
}

status() {
  local any=0
  for pid_file in "$state"/master.pid "$state"/worker-*.pid; do
    [[ -f $pid_file ]] || continue
    any=1
    if alive "$pid_file"; then echo "$(basename "$pid_file" .pid): running (pid $(cat "$pid_file"))"
    else echo "$(basename "$pid_file" .pid): not running"; fi
  done
  ((any)) || echo "no cluster started from $state"
  if alive "$state/master.pid"; then echo "registered workers: $(registered_workers) at $master_url"; fi
}

case ${1:-} in
  start) shift; start "$@" ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start N | stop | status" >&2; exit 2 ;;
esac
