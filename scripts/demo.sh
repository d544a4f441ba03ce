#!/usr/bin/env bash
# make demo: the retrain DAG end to end under `airflow dags test` (auto-approved), then the HTTP serving path.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/airflow_env.sh
export TF_CPP_MIN_LOG_LEVEL=2 GIT_PYTHON_REFRESH=quiet
DATASET="${DATASET:-ml-100k}"
N_TRIALS="${N_TRIALS:-4}"
PORT="${PORT:-8765}"
USER_ID="${USER_ID:-1}"

echo "==> Airflow metadata DB (SQLite) in $AIRFLOW_HOME"
airflow db migrate >"$AIRFLOW_HOME/migrate.log" 2>&1 || { tail -20 "$AIRFLOW_HOME/migrate.log"; exit 1; }

echo "==> airflow dags test fusionrec_retrain (dataset=$DATASET, n_trials=$N_TRIALS, auto_approve)"
start=$(date +%s)
airflow dags test fusionrec_retrain \
    -c "{\"dataset\": \"$DATASET\", \"n_trials\": $N_TRIALS, \"auto_approve\": true}" 2>&1 \
    | tee "$FUSIONREC_HOME/dag-run.log" | grep -E "Marking task as|ERROR|Traceback|stage|selected|promoted" || true
state=$(grep -Eo "DagRun Finished: .*state=[a-z]+" "$FUSIONREC_HOME/dag-run.log" | tail -1 || true)
echo "==> DAG finished in $(( $(date +%s) - start ))s: ${state:-unknown}"
if ! grep -q "state=success" <<<"$state"; then
    echo "error: the DAG run did not succeed; see $FUSIONREC_HOME/dag-run.log" >&2
    exit 1
fi

echo "==> fusionrec status"
fusionrec status

echo "==> serving on http://127.0.0.1:$PORT"
fusionrec serve --port "$PORT" >"$FUSIONREC_HOME/serve.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 60); do
    curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break
    sleep 1
done
echo "==> GET /recommendations/$USER_ID?k=10"
curl -fsS "http://127.0.0.1:$PORT/recommendations/$USER_ID?k=10" | python3 -c '
import json, sys
answer = json.load(sys.stdin)
print(f"user {answer[\"user_id\"]} - model {answer[\"model_version\"]} - cold_start={answer[\"cold_start\"]}")
for rank, item in enumerate(answer["items"], 1):
    print(f"{rank:>3}. item {item[\"item_id\"]:<8} score {item[\"score\"]:.4f}")
'
