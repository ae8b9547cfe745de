"""The tools a person runs (``mlflow-relay``): nothing in the runtime imports this package."""
