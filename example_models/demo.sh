#!/usr/bin/env bash
# `make demo`: the main job end to end on the embedded defaults (local SQLite tracking store,
# env_manager uv). Deploys logged models with the real `mlflow deployments` CLI, each in its model's
# own locked environment (the examples share one lock, so one env is built and then reused),
# scores them over HTTP through each endpoint's gateway (with its key) with Azure's three payload
# forms, shows a bad payload's 424 carrying the deployment's 400, mirrors traffic to a second
# deployment and reads the agreement report, runs a batch job over a folder of CSV files, lists
# and cleans up.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
P="$HERE/payloads"
T=azureml-local
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
cleanup() {
  mlflow-deploy online-endpoint delete --name diabetes >/dev/null 2>&1 || true
  mlflow-deploy batch-endpoint delete --name diabetes-batch >/dev/null 2>&1 || true
  for d in blue green iris tokens multi; do
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
key() {  # an endpoint's primary key, as `az ml online-endpoint get-credentials` prints it
  mlflow-deploy online-endpoint get-credentials --name "$1" | python -c \
    "import json, sys; print(json.load(sys.stdin)['primaryKey'])"
}
score() {  # POST a payload file to an endpoint with its key, print the status and the body
  curl -sS -w '  -> HTTP %{http_code}\n' -H 'Content-Type: application/json' \
    -H "Authorization: Bearer $(key "$1")" -d @"$3" "$2"
}
DIABETES="$(uri diabetes)"
say "split payload to $DIABETES"
score diabetes "$DIABETES" "$P/diabetes-split.json"
say "without the key: 401"
curl -sS -w '  -> HTTP %{http_code}\n' -d @"$P/diabetes-split.json" "$DIABETES"
say "tensor payload to the iris-tensor model"
score iris "$(uri iris)" "$P/iris-tensor.json"
say "named-tensor payload to the tokens-mask model"
score tokens "$(uri tokens)" "$P/tokens-mask-named.json"
say "a bad payload: the deployment's 400 naming what is wrong, wrapped by the endpoint as Azure does"
status=$(curl -sS -D /tmp/mlflow-deploy-demo-bad.headers -o /tmp/mlflow-deploy-demo-bad.json \
  -w '%{http_code}' -H 'Content-Type: application/json' -H "Authorization: Bearer $(key diabetes)" \
  -d @"$P/diabetes-bad.json" "$DIABETES")
cat /tmp/mlflow-deploy-demo-bad.json; echo "  -> HTTP $status"
grep -i '^ms-azureml-model-error-statuscode' /tmp/mlflow-deploy-demo-bad.headers
[ "$status" = 424 ] && grep -qi '^ms-azureml-model-error-statuscode: 400' \
  /tmp/mlflow-deploy-demo-bad.headers
say "mirror 50% of the endpoint's requests to a new deployment 'green', and compare the answers"
mlflow deployments create -t "$T" --name green -m models:/diabetes/1 --endpoint diabetes >/dev/null
mlflow-deploy online-endpoint update --name diabetes --mirror-traffic green=50 >/dev/null
for _ in $(seq 40); do score diabetes "$DIABETES" "$P/diabetes-split.json" >/dev/null; done
mlflow-deploy online-endpoint show-mirror --name diabetes
mlflow-deploy online-endpoint update --name diabetes --mirror-traffic green=0 >/dev/null
say "a scoring script serving three plain pickles by model_id (seed 000's score.py, unchanged)"
MODELS="$HERE/../.mlflow/multi-model/models"
[ -d "$MODELS" ] || python "$HERE/scripts/multi_model/build.py" "$MODELS" >/dev/null
mlflow deployments create -t "$T" --name multi -m "$MODELS" \
  -C code="$HERE/scripts/multi_model" -C scoring_script=score.py
MULTI="$(uri multi)"
score multi "$MULTI" "$P/multi-model.json"
say "an unknown model_id gets the script's own answer"
curl -sS -w '  -> HTTP %{http_code}\n' -H "Authorization: Bearer $(key multi)" \
  -d '{"model_id": "model_Z", "data": [[1, 2, 3]]}' "$MULTI"
say "mlflow deployments predict (the same payload file through the MLflow CLI)"
mlflow deployments predict -t "$T" --endpoint diabetes --input-path "$P/diabetes-split.json"
say "batch: an az ml batch endpoint and deployment (YAML), then a job over a folder of CSV files"
mlflow-deploy batch-endpoint create -f "$HERE/batch/endpoint.yml" >/dev/null
mlflow-deploy batch-deployment create -f "$HERE/batch/deployment.yml" >/dev/null
BATCH_OUT="$(mktemp -d)"
mlflow-deploy batch-endpoint invoke --name diabetes-batch --input "$HERE/batch/diabetes" \
  --output-path "$BATCH_OUT" --wait
say "the first lines of predictions.csv ([file, prediction], as Azure's MLflow batch driver writes)"
head -5 "$BATCH_OUT/predictions.csv"
[ "$(wc -l < "$BATCH_OUT/predictions.csv")" = 442 ]  # every row of the 4 files, once
rm -rf "$BATCH_OUT"
mlflow-deploy batch-endpoint delete --name diabetes-batch
say "list"
mlflow deployments list -t "$T"
say "delete"
for d in green blue iris tokens multi; do mlflow deployments delete -t "$T" --name "$d"; done
# 'diabetes' is the user's own since its traffic was changed by hand (as on Azure): it stays
# after its deployments until deleted
mlflow-deploy online-endpoint delete --name diabetes
mlflow deployments list -t "$T"
mlflow-deploy online-endpoint list
trap - EXIT
say "demo finished"
