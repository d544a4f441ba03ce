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
    | tee "$FUSIONREC_HOME/dag-run.log" | grep --line-buffered -E "Marking task as|ERROR|Traceback|selected |promoted |registered " || true
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
echo "==> GET /recommendations/$USER_ID?k=10"
python - "http://127.0.0.1:$PORT" "$USER_ID" "$FUSIONREC_HOME/data/validated/items.parquet" <<'PY'
import json, sys, time, urllib.request
from pathlib import Path

import pandas as pd

base, user, items = sys.argv[1], sys.argv[2], Path(sys.argv[3])
for _ in range(120):  # wait for the server to come up
    try:
        urllib.request.urlopen(f"{base}/health", timeout=1)
        break
    except OSError:
        time.sleep(0.5)
with urllib.request.urlopen(f"{base}/recommendations/{user}?k=10", timeout=10) as response:
    answer = json.load(response)
titles = pd.read_parquet(items).set_index("item_id").get("title") if items.exists() else None
print(f"user {answer['user_id']} | model version {answer['model_version']} | cold_start={answer['cold_start']}")
for rank, item in enumerate(answer["items"], 1):
    title = titles.get(item["item_id"], "") if titles is not None else ""
    why = (item.get("explanation") or {}).get("text", "")
    print(f"{rank:>3}. item {item['item_id']:<6} {item['score']:.4f}  {title[:40]:<40} {why}")
PY
