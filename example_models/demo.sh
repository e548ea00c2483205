#!/usr/bin/env bash
# `make demo`: the main job end to end on the embedded defaults (local SQLite tracking store,
# env_manager uv). Deploys logged models with the real `mlflow deployments` CLI, each in its model's
# own locked environment (the examples share one lock, so one env is built and then reused),
# scores them over HTTP with Azure's three payload forms, shows a bad payload's 400, lists and
# cleans up.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
P="$HERE/payloads"
T=azureml-local
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
cleanup() {
  for d in blue iris tokens multi; do
    mlflow deployments delete -t "$T" --name "$d" >/dev/null 2>&1 || true
  done
}
trap cleanup EXIT
cleanup

say "deploy models:/diabetes/1 as 'blue' behind endpoint 'diabetes'"
mlflow deployments create -t "$T" --name blue -m models:/diabetes/1 --endpoint diabetes
mlflow deployments create -t "$T" --name iris -m models:/iris-tensor/1 -C instance_count=1
mlflow deployments create -t "$T" --name tokens -m models:/tokens-mask/1 -C instance_count=1

uri() {  # the endpoint's scoring URI, from the plugin's Python API
  python -c "import sys; from mlflow.deployments import get_deploy_client; \
print(get_deploy_client('$T').get_endpoint(sys.argv[1])['scoring_uri'])" "$1"
}
score() {  # POST a payload file, print the status and the body
  curl -sS -w '  -> HTTP %{http_code}\n' -H 'Content-Type: application/json' -d @"$2" "$1"
}
DIABETES="$(uri diabetes)"
say "split payload to $DIABETES"
score "$DIABETES" "$P/diabetes-split.json"
say "tensor payload to the iris-tensor model"
score "$(uri iris)" "$P/iris-tensor.json"
say "named-tensor payload to the tokens-mask model"
score "$(uri tokens)" "$P/tokens-mask-named.json"
say "a bad payload gets a 400 that names what is wrong"
status=$(curl -sS -o /tmp/mlflow-deploy-demo-bad.json -w '%{http_code}' \
  -H 'Content-Type: application/json' -d @"$P/diabetes-bad.json" "$DIABETES")
cat /tmp/mlflow-deploy-demo-bad.json; echo "  -> HTTP $status"
[ "$status" = 400 ]
say "a scoring script serving three plain pickles by model_id (seed 000's score.py, unchanged)"
MODELS="$HERE/../.mlflow/multi-model/models"
[ -d "$MODELS" ] || python "$HERE/scripts/multi_model/build.py" "$MODELS" >/dev/null
mlflow deployments create -t "$T" --name multi -m "$MODELS" \
  -C code="$HERE/scripts/multi_model" -C scoring_script=score.py
MULTI="$(uri multi)"
score "$MULTI" "$P/multi-model.json"
say "an unknown model_id gets the script's own answer"
curl -sS -w '  -> HTTP %{http_code}\n' -d '{"model_id": "model_Z", "data": [[1, 2, 3]]}' "$MULTI"
say "mlflow deployments predict (the same payload file through the MLflow CLI)"
mlflow deployments predict -t "$T" --endpoint diabetes --input-path "$P/diabetes-split.json"
say "list"
mlflow deployments list -t "$T"
say "delete"
for d in blue iris tokens multi; do mlflow deployments delete -t "$T" --name "$d"; done
mlflow deployments list -t "$T"
trap - EXIT
say "demo finished"
