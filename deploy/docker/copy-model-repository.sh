#!/bin/sh
# Init-container entrypoint: copy the model repository baked into this image to DEST, the
# emptyDir that Triton then mounts read-only at its --model-repository path.
set -eu
dest="${1:?usage: copy-model-repository DEST}"
if [ ! -d /model_repository ] || [ -z "$(ls -A /model_repository)" ]; then
    echo "copy-model-repository: /model_repository is missing or empty; build this image" \
         "with --build-arg MODEL_REPOSITORY=<exported repository folder>" >&2
    exit 1
fi
cp -R /model_repository/. "$dest"/
echo "copy-model-repository: copied to $dest: $(ls "$dest" | tr '\n' ' ')"
