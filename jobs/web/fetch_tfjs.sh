#!/usr/bin/env bash
# Puts TensorFlow.js's browser bundle at build/tfjs/tf.min.js, where the sentiment job
# finds it and copies it next to its page (the page loads no script from the network).
#
#   jobs/web/fetch_tfjs.sh            # @tensorflow/tfjs 4.22.0, checked against its SHA-256
#   TFJS_VERSION=4.21.0 jobs/web/fetch_tfjs.sh   # another version (no checksum to check)
#
# It takes the package tarball from the npm registry with `npm pack` (which checks the
# registry's integrity hash) and extracts one file: no node_modules, nothing committed.
set -euo pipefail

version=${TFJS_VERSION:-4.22.0}
# SHA-256 of package/dist/tf.min.js in @tensorflow/tfjs 4.22.0.
expected_sha256=300dfae273d20b4046f46a06d735688f03675a807561e9bcb5f664eb2f3d2831
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
dest=$repo/build/tfjs

if ! command -v npm >/dev/null 2>&1; then
  echo "error: npm not found; it fetches @tensorflow/tfjs from the npm registry (apt-get install -y npm)" >&2
  exit 1
fi
if [[ $version == 4.22.0 && -f $dest/tf.min.js ]] && [[ $(sha256sum "$dest/tf.min.js" | cut -d' ' -f1) == "$expected_sha256" ]]; then
  echo "$dest/tf.min.js is already @tensorflow/tfjs $version"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "@tensorflow/tfjs@$version" >/dev/null)
tar -xzf "$tmp/tensorflow-tfjs-$version.tgz" -C "$tmp" package/dist/tf.min.js
if [[ $version == 4.22.0 ]]; then
  actual=$(sha256sum "$tmp/package/dist/tf.min.js" | cut -d' ' -f1)
  if [[ $actual != "$expected_sha256" ]]; then
    echo "error: tf.min.js of @tensorflow/tfjs@$version has SHA-256 $actual, expected $expected_sha256" >&2
    exit 1
  fi
fi
mkdir -p "$dest"
cp "$tmp/package/dist/tf.min.js" "$dest/tf.min.js"
echo "$version" >"$dest/VERSION"
echo "wrote $dest/tf.min.js (@tensorflow/tfjs $version)"
