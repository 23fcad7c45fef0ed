"""MLflow and the model lifecycle, at the edge: runs (mlflow_runs), the store (store), models as
pyfuncs (serving) registered as `lmpipe-<kind>` (registry) with a `champion` alias moved only for
a better model (promotion), CI's retraining report (retrain). The only folder that imports mlflow."""
