#!/usr/bin/env bash
# make bench: our scoring server side by side with the peers of ../shared/bench/peers in one run
# (mlflow models serve, azureml-inference-server-http, MLServer, a bare Flask floor), same model,
# same payloads. Prints the tables and keeps them under bench/out/<UTC stamp>/results.md.
# Knobs: ROUNDS=2 DURATION=10 PEERS=ours,azmlinfsrv,mlflow,mlserver,flask-floor WORKERS=2 COLD=1
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PEERS_DIR="${PEERS_DIR:-$ROOT/../shared/bench/peers}"
PY="${PYTHON:-python3.11}"
export MLFLOW_DEPLOY_VENV="$ROOT/.venv"
OUT="$ROOT/bench/out/$(date -u +%Y%m%dT%H%M%SZ)"
PEERS="${PEERS:-ours,azmlinfsrv,mlflow,mlserver,flask-floor}"
mkdir -p "$OUT"
bash "$PEERS_DIR/setup.sh" 2>&1 | tail -3        # peers' venvs, models, wrk (kept between runs)
B=("$PY" "$PEERS_DIR/bench.py" --config "$ROOT/bench/peers.toml" --out "$OUT" --peers "$PEERS")
{ date -u; uname -srm; nproc; free -g | head -2; } > "$OUT/machine.txt"
[ "${COLD:-1}" = 0 ] || "${B[@]}" coldstart --workers "${WORKERS:-2}" --trials 3
"${B[@]}" load --workers "${WORKERS:-2}" --rounds "${ROUNDS:-2}" --duration "${DURATION:-10}" \
  --model regressor
"${B[@]}" report --md "$OUT/results.md"
cat "$OUT/results.md"
echo "results: $OUT/results.md"
