#!/usr/bin/env bash
# Tell the hosting platform to deploy a new image. Generic on purpose: set ONE of
#   DEPLOY_HOOK_URL      a deploy hook URL; it receives a POST with JSON {"image", "version"}
#                        (Koyeb, Render, Railway, a webhook of your own ...)
#   DEPLOY_HOOK_COMMAND  a shell command, run with IMAGE and MODEL_VERSION in its
#                        environment (e.g. `koyeb service redeploy treesurv/api`)
# Both normally come from repository secrets; nothing here names a platform or a key.
# DEPLOY_HOOK_RETRIES (default 3): how often curl retries a transient failure (5xx,
# timeouts), waiting 1, 2, 4 ... seconds in between.
set -euo pipefail

IMAGE="${IMAGE:?IMAGE is not set (the image to deploy)}"
MODEL_VERSION="${MODEL_VERSION:-${IMAGE##*:}}"
export IMAGE MODEL_VERSION

if [[ -n "${DEPLOY_HOOK_URL:-}" ]]; then
  payload=$(printf '{"image": "%s", "version": "%s"}' "$IMAGE" "$MODEL_VERSION")
  curl --fail --silent --show-error --retry "${DEPLOY_HOOK_RETRIES:-3}" --max-time 60 \
    -X POST -H "Content-Type: application/json" --data "$payload" "$DEPLOY_HOOK_URL" >/dev/null
  echo "deploy hook called for $IMAGE"
elif [[ -n "${DEPLOY_HOOK_COMMAND:-}" ]]; then
  bash -c "$DEPLOY_HOOK_COMMAND"
  echo "deploy command ran for $IMAGE"
else
  echo "error: set DEPLOY_HOOK_URL or DEPLOY_HOOK_COMMAND (repository secrets) to redeploy" >&2
  exit 2
fi
