"""MLflow at the edge: runs (mlflow_runs), the store (store), models as pyfuncs (serving) registered
as `lmpipe-<kind>` (registry), champion aliases (promotion). The only folder that imports mlflow."""
