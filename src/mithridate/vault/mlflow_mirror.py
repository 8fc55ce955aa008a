"""Mirror the model registry into MLflow's, for teams whose training and serving read MLflow.

mithridate stays the source of truth: lineage, signed records, quarantines and rollbacks happen here. MLflow
gets one registered model per model, one version per version (its source ``mithridate:NAME@N``; tags: the
ref, status, datasets, parent, SHA-256 of the weights), and its aliases moved to match ours. Run
:func:`sync` after every change (``mithridate registry mlflow-sync``): after a rollback it moves MLflow's
``champion`` too, and a version quarantined here is tagged so in MLflow. It is idempotent, and it never
touches an MLflow alias that mithridate does not hold.
"""

from __future__ import annotations

import json

SOURCE = "mithridate:"
TAG = "mithridate."


def sync(vault, token: str, tracking_uri: str, registry_uri: str | None = None) -> dict:
    """Bring the MLflow registry at ``tracking_uri`` in line with the vault's; what changed."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri or tracking_uri)
    ours = vault.models(token)
    mirrored: dict[str, dict[str, str]] = {}  # model -> our ref -> MLflow version
    created, updated = [], []
    for name in sorted({m["model"].rpartition("@")[0] for m in ours}):
        if not client.search_registered_models(filter_string=f"name = '{name}'"):
            client.create_registered_model(name, description="mirrored from mithridate's registry")
        mirrored[name] = {v.tags.get(f"{TAG}ref"): v.version
                          for v in client.search_model_versions(f"name = '{name}'") if v.tags.get(f"{TAG}ref")}
    for model in ours:  # in version order, so new MLflow versions keep our numbering where they can
        name = model["model"].rpartition("@")[0]
        tags = {f"{TAG}ref": model["model"], f"{TAG}status": model["status"],
                f"{TAG}datasets": ",".join(model["datasets"]), f"{TAG}parent": model["parent"] or "",
                f"{TAG}metrics": json.dumps(model["metrics"], sort_keys=True)}
        version = mirrored[name].get(model["model"])
        if version is None:
            made = client.create_model_version(name, source=f"{SOURCE}{model['model']}", tags=tags,
                                               description=f"mithridate {model['model']}")
            mirrored[name][model["model"]] = made.version
            created.append(model["model"])
            continue
        current = client.get_model_version(name, version).tags
        changed = {k: v for k, v in tags.items() if current.get(k) != v}
        for key, value in changed.items():
            client.set_model_version_tag(name, version, key, value)
        if changed:
            updated.append(model["model"])
    moved, removed = [], []
    for alias in vault.aliases(token):
        name = alias["model"]
        try:
            now = client.get_model_version_by_alias(name, alias["alias"]).version
        except Exception:  # MLflow raises when the alias is not set
            now = None
        want = None if alias["number"] is None else mirrored.get(name, {}).get(f"{name}@{alias['number']}")
        if want == now:
            continue
        if want is None:
            client.delete_registered_model_alias(name, alias["alias"])
            removed.append(f"{name}@{alias['alias']}")
        else:
            client.set_registered_model_alias(name, alias["alias"], want)
            moved.append({"alias": f"{name}@{alias['alias']}", "mlflow_version": int(want)})
    return {"created": created, "updated": updated, "aliases_moved": moved, "aliases_removed": removed}
