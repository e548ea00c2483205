#!/usr/bin/env bash
# make bench: our scoring server side by side with the peers of ../shared/bench/peers in one run
# (mlflow models serve, azureml-inference-server-http, MLServer with and without its adaptive
# batching, a bare Flask floor), same model, same payloads. Prints the tables and keeps them under
# bench/out/<UTC stamp>/results.md.
#   ours                 a real deployment: `mlflow deployments create -t azureml-local`
#                        (bench/peers.toml, bench/deployment_peer.py), the model's own env, deleted
#                        when the harness stops it; the load goes to the deployment's own port
#                        (which its endpoint's gateway passes through untouched)
#   ours-endpoint        the same deployment behind an endpoint made first, the load through the
#                        endpoint's URL with its key (Authorization header): key check, routing
#   ours-endpoint-batch  the same with the gateway's adaptive batching on (max_batch_size 32,
#                        max_batch_time_ms 5: mlserver-batch's settings)
#   ours-venv            our gunicorn entry from the project's .venv with a hand-written config
#                        (the old peer)
#   mlserver-batch       MLServer with adaptive batching (max_batch_size 32, max_batch_time 5 ms)
# The harness is run through bench/harness.py, which counts a deployment's detached processes
# (gateway, gunicorn master and workers, the env's fork server) as the `ours*` peers' (CPU,
# memory), sends the endpoint peers' key, and adds two tables to the report: the gateway's own
# CPU per request, and PSS per instance, per worker and of the gateway for every peer (the
# floor's beside ours). The other peers are measured as bench.py does.
# Cold start of `ours*` includes `mlflow deployments create`'s own start-up (the MLflow CLI: about
# 4.7 s here, as `mlflow models serve` pays for the peer mlflow) and a fresh fork server; the
# endpoint peers' also the endpoint's creation.
# Knobs: ROUNDS=2 DURATION=10 WORKERS=2 COLD=1
#        PEERS=ours,ours-endpoint,ours-endpoint-batch,ours-venv,azmlinfsrv,mlflow,mlserver,mlserver-batch,flask-floor
#        MLFLOW_DEPLOY_VENV=<the checkout's .venv> (the control plane's: `mlflow`, the plugin, the
#        gateway; the model's env gets the wheel of the mlflow_deploy that venv imports)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PEERS_DIR="${PEERS_DIR:-$ROOT/../shared/bench/peers}"
PY="${PYTHON:-python3.11}"
export BENCH_ROOT="${BENCH_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/mlflow-deploy-peers}"  # bench.py's
export MLFLOW_DEPLOY_VENV="${MLFLOW_DEPLOY_VENV:-$ROOT/.venv}" MLFLOW_DEPLOY_BENCH="$ROOT/bench"
# the `ours` peer's model env (and our wheel's build cache): the test suite's, kept between runs
export MLFLOW_DEPLOY_ENV_CACHE="${MLFLOW_DEPLOY_ENV_CACHE:-$ROOT/.mlflow-deploy/envs}"
export MLFLOW_DEPLOY_BUILD_CACHE="${MLFLOW_DEPLOY_BUILD_CACHE:-$ROOT/.mlflow-deploy/build}"
OUT="$ROOT/bench/out/$(date -u +%Y%m%dT%H%M%SZ)"
PEERS="${PEERS:-ours,ours-endpoint,ours-endpoint-batch,ours-venv,azmlinfsrv,mlflow,mlserver,mlserver-batch,flask-floor}"
mkdir -p "$OUT"
bash "$PEERS_DIR/setup.sh" 2>&1 | tail -3        # peers' venvs, models, wrk (kept between runs)

# deployments (and fork servers) a killed earlier run left: they would hold the peer's port
leftovers() {
  shopt -s nullglob
  local dirs=("$BENCH_ROOT"/run/*/d "$OUT/env-build")  # bench/peers.toml's state folders
  [ ${#dirs[@]} = 0 ] || "$MLFLOW_DEPLOY_VENV/bin/python" "$MLFLOW_DEPLOY_BENCH/deployment_peer.py" \
    --cleanup "${dirs[@]}"
}
leftovers
trap leftovers EXIT
if [[ ",$PEERS," =~ ,ours(-endpoint[a-z-]*)?, ]]; then  # the deployment peers
  # build (or reuse) the model's env now, so that no peer start builds it (an edit of
  # mlflow_deploy/ changes our wheel's hash, hence the env's key); a home of its own, not ~
  mkdir -p "$OUT/env-build/run" && chmod 700 "$OUT/env-build/run"
  MLFLOW_DEPLOY_HOME="$OUT/env-build/home" MLFLOW_DEPLOY_RUN_DIR="$OUT/env-build/run" \
    "$MLFLOW_DEPLOY_VENV/bin/mlflow-deploy" env build "$BENCH_ROOT/models/regressor" | tail -4
fi

B=("$PY" "$ROOT/bench/harness.py" --config "$ROOT/bench/peers.toml" --out "$OUT" --peers "$PEERS")
{ date -u; uname -srm; nproc; free -g | head -2; } > "$OUT/machine.txt"
[ "${COLD:-1}" = 0 ] || "${B[@]}" coldstart --workers "${WORKERS:-2}" --trials 3
"${B[@]}" load --workers "${WORKERS:-2}" --rounds "${ROUNDS:-2}" --duration "${DURATION:-10}" \
  --model regressor
"${B[@]}" report --md "$OUT/results.md" > /dev/null
cat "$OUT/results.md"
echo "results: $OUT/results.md"
