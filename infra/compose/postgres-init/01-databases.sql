-- The databases of the FusionRec stack. The postgres image runs this once, on an empty data volume; on an
-- existing server run it by hand: psql -h HOST -U postgres -f infra/compose/postgres-init/01-databases.sql
CREATE DATABASE airflow;           -- Airflow metadata and the Celery result backend
CREATE DATABASE fusionrec_mlflow;  -- MLflow tracking + model registry (the server's backend store)
CREATE DATABASE fusionrec_events;  -- feedback events from the serving API (POST /events)
CREATE DATABASE fusionrec_optuna;  -- Optuna studies (resumable tuning)
CREATE DATABASE fusionrec_features; -- Feast offline store
