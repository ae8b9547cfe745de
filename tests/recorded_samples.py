"""Where the recorded MLflow 3.17.2 deliveries live in the repository, and what a complete recording holds.

``scripts/record_samples.py`` writes them from a real ``mlflow server``; the tests only read them.
"""

from __future__ import annotations

from pathlib import Path

SAMPLES_DIR = Path(__file__).resolve().parent / "samples" / "mlflow-3.17.2"

# In the order the recorder makes the calls (its PROVENANCE.md table): MLflow's test_webhook first,
# then create model -> version 1 -> tag -> alias champion -> version 2 -> move champion -> delete
# tag -> delete alias. A name is ``entity.action``, then a variant when one event is recorded twice.
RECORDED_SEQUENCE = (
    "model_version_alias.created.test",
    "registered_model.created",
    "model_version.created",
    "model_version_tag.set",
    "model_version_alias.created",
    "model_version.created.v2",
    "model_version_alias.created.moved",
    "model_version_tag.deleted",
    "model_version_alias.deleted",
)


def event_of(name: str) -> str:
    """``entity.action`` of a sample name (``model_version_alias.created.moved`` -> ``model_version_alias.created``)."""
    return ".".join(name.split(".")[:2])
