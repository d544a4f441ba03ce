#!/bin/sh
# Entry point of the FusionRec image: `fusionrec` by default (`docker run IMAGE serve ...`), while the tools
# the deployments call by name run as themselves (`airflow scheduler`, `bash -c ...`, `mlflow server ...`).
# An explicit list, not "anything on PATH": `split` is both a fusionrec command and a coreutils binary.
set -e
case "${1:-}" in
    airflow | mlflow | celery | python | python3 | bash | sh | dvc | feast | uvicorn | /*)
        exec "$@"
        ;;
esac
exec fusionrec "$@"
