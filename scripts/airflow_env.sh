# Source me (bash/zsh) to run the FusionRec DAG with the venv's Airflow on a local SQLite metadata DB:
#
#   source scripts/airflow_env.sh
#   airflow db migrate
#   airflow dags test fusionrec_retrain -c '{"auto_approve": true}'
#
# Every variable keeps a value you already exported. Dev/test only: SQLite allows one writer, so use
# PostgreSQL (AIRFLOW__DATABASE__SQL_ALCHEMY_CONN) for a real scheduler + executor deployment.

_fusionrec_script="${BASH_SOURCE[0]:-${(%):-%x}}"
FUSIONREC_REPO="$(cd "$(dirname "$_fusionrec_script")/.." && pwd)"
unset _fusionrec_script
export FUSIONREC_REPO

# Where FusionRec keeps data, models and MLflow (absolute: Airflow tasks may run in another directory).
export FUSIONREC_HOME="${FUSIONREC_HOME:-$FUSIONREC_REPO/.fusionrec}"
mkdir -p "$FUSIONREC_HOME"
FUSIONREC_HOME="$(cd "$FUSIONREC_HOME" && pwd)"

export AIRFLOW_HOME="${AIRFLOW_HOME:-$FUSIONREC_HOME/airflow}"
mkdir -p "$AIRFLOW_HOME"
export AIRFLOW__CORE__DAGS_FOLDER="${AIRFLOW__CORE__DAGS_FOLDER:-$FUSIONREC_REPO/dags}"
export AIRFLOW__CORE__LOAD_EXAMPLES="${AIRFLOW__CORE__LOAD_EXAMPLES:-False}"
# Four slashes: an absolute SQLite path.
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="${AIRFLOW__DATABASE__SQL_ALCHEMY_CONN:-sqlite:///$AIRFLOW_HOME/airflow.db}"
# Local UI/REST login for reviewers (`airflow standalone` / `airflow api-server`); password file in AIRFLOW_HOME.
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS:-admin:admin}"
# The UI/API listens on loopback only, unless you say otherwise.
export AIRFLOW__API__HOST="${AIRFLOW__API__HOST:-127.0.0.1}"
# New DAGs start unpaused so the @daily schedule runs without a click (a scheduler must be running).
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="${AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION:-False}"

# The venv's airflow first, whichever directory you call it from.
case ":$PATH:" in
    *":$FUSIONREC_REPO/.venv/bin:"*) ;;
    *) export PATH="$FUSIONREC_REPO/.venv/bin:$PATH" ;;
esac
