"""MLflow and the model lifecycle, at the edge. In: run names, params, metrics and model files
from the stages. Out: MLflow runs — a parent run per pipeline execution, a nested run per model,
reaping of runs whose process died (`mlflow_runs`); models logged as pyfunc (`serving`) and
registered as `lmpipe-<kind>` with a `champion` alias (`registry`), moved only for a better model
(`promotion`); and CI's retraining report (`retrain`). The only folder that imports mlflow; may
import every folder before it in the flow.
"""
